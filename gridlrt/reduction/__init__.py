"""The reduction room: what the calibrator → target pipeline's own steps run on a node.

LOFAR's calibrator and target reduction (the shape of LINC) on real DP3 and WSClean:

* :mod:`gridlrt.reduction.clock` - pure fits over frequency: a station's clock delay from its
  calibrator phases, smoothed amplitudes;
* :mod:`gridlrt.reduction.h5parm` - reading DP3's per-subband solutions and writing the
  combined solutions, through LOSOTO's H5parm module;
* :mod:`gridlrt.reduction.solve` - the ``cal-solve`` step: DP3 gaincal per calibrator
  subband, then one set of solutions for the observation;
* :mod:`gridlrt.reduction.wsclean` and :mod:`gridlrt.reduction.image` - the ``image`` step:
  WSClean to FITS, plus a PNG preview;
* :mod:`gridlrt.reduction.measure` - where sources are in a FITS image and how bright.

Steps run these as ``{python} -m gridlrt.reduction.<step>``; importing this package imports
nothing heavy (LOSOTO, astropy and casacore are imported where they are used). Sites that run
LOFAR pipelines provide those libraries (``gridlrt[reduction]`` here); the pilot bundle never
ships them.
"""
