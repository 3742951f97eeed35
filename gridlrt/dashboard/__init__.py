"""The dashboard room: a read-only web view of a run (``gridlrt dashboard``, issue 17).

* :mod:`gridlrt.dashboard.snapshots` - pure functions turning the library's snapshots
  (:mod:`gridlrt.monitor`, :func:`~gridlrt.pipelines.service.pipeline_status`, tokens, the
  dataset catalogue) into page models and SVG pictures;
* :mod:`gridlrt.dashboard.cache` - :class:`~gridlrt.dashboard.cache.TTLCache`, which keeps
  readings of the pool between refreshes and reads them again in the background once expired
  (a page never waits for a reading but the very first);
* :mod:`gridlrt.dashboard.app` - the Starlette app (:func:`create_app`): pages, the fragments
  their live parts refresh, the access-token guard for a non-loopback bind, the read-only image
  proxy; Jinja2 templates in ``templates/``, the stylesheet and the polling script in
  ``static/`` (no CDN: the UI node may have no internet).

Needs ``gridlrt[dashboard]`` (starlette, jinja2, uvicorn). Never writes to the pool and never
shows a secret: every URL shown passes :func:`~gridlrt.dashboard.snapshots.safe_url`.
"""
