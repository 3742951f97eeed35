"""bench/scale_model.py: the queue arithmetic, the request sequences of the two clients, the
seed, and the race that makes PiCaS run a token twice (and never gridlrt).

Pure: the model is a simulation in memory; each run here takes well under a second.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from bench.scale_model import (
    COSTS_MS,
    Params,
    carried,
    default_tokens,
    percentile,
    simulate,
)

SERVERS = ["shared", "fifo"]


def flat(ms: float) -> dict[str, float]:
    """Every request costs ``ms``; views cost nothing extra per written document or per
    taken token."""
    return {
        k: 0.0 if k.startswith(("index_", "picas_index")) or k.endswith("_skip") else ms
        for k in COSTS_MS
    }


def bench(client: str, pilots: int, tokens: int, server: str = "shared") -> Params:
    """pool_bench's setting: claimers released together, tokens of no duration."""
    return Params(
        client=client,
        pilots=pilots,
        tokens=tokens,
        duration_median=0.0,
        profile="bench",
        rtt=0.0,
        client_ms=0.0,
        server=server,
    )


@pytest.mark.parametrize("server", SERVERS)
def test_one_claimer_waits_for_every_request_in_turn(server: str) -> None:
    # PiCaS's cycle is four requests (view, GET, PUT lock, PUT done): 4 x 5 ms per claim,
    # and one more view read finds the pool empty
    result = simulate(bench("picas", 1, 200, server), flat(5.0))
    assert result.claims == 200
    assert result.simulated_s == pytest.approx(200 * 0.020 + 0.005)
    assert result.conflicts == 0
    assert result.processed_twice == 0


@pytest.mark.parametrize("server", SERVERS)
@pytest.mark.parametrize("client", ["gridlrt", "picas"])
def test_many_claimers_are_capped_at_one_over_the_service_time(server: str, client: str) -> None:
    result = simulate(bench(client, 32, 1000, server), flat(5.0))
    assert result.utilisation == pytest.approx(1.0, abs=0.02)  # never idle while they wait
    assert result.requests_per_s == pytest.approx(1 / 0.005, rel=0.02)
    # at least three requests per claim (view reads are shared by many claims for gridlrt)
    assert result.claims_per_s <= 1 / 0.015 + 1e-6
    assert result.tokens_done == 1000


@pytest.mark.parametrize("server", SERVERS)
def test_a_server_with_a_second_cpu_serves_twice_as_many(server: str) -> None:
    one = simulate(bench("picas", 32, 1000, server), flat(5.0))
    two = simulate(replace(bench("picas", 32, 1000, server), workers=2), flat(5.0))
    assert two.requests_per_s == pytest.approx(2 * one.requests_per_s, rel=0.05)


def test_below_saturation_the_claim_latency_is_bounded() -> None:
    p = Params(pilots=100, hours=0.5, ramp=120.0, duration_median=300.0, seed=3)
    calm = simulate(p)
    assert calm.utilisation < 0.3
    assert calm.pilots_ended == 0  # enough tokens by default
    # a handful of requests, each a round trip plus a few ms of service
    assert calm.claim_latency_p95_s < 0.5
    assert calm.response_p95_ms < 50
    # the same pilots on a server 200 times slower: saturated, and the latency is not bounded
    slow = simulate(replace(p, scale=200.0))
    assert slow.utilisation > 0.95
    assert slow.claim_latency_p95_s > 20 * calm.claim_latency_p95_s


def test_load_grows_linearly_with_pilots_until_saturation() -> None:
    p = Params(pilots=50, hours=0.5, ramp=120.0, duration_median=300.0, seed=2)
    small, large = simulate(p), simulate(replace(p, pilots=200))
    assert large.utilisation == pytest.approx(4 * small.utilisation, rel=0.15)
    assert carried([small, large], "gridlrt", 1.0) is large
    assert carried([small, large], "gridlrt", small.utilisation) is small
    assert carried([small, large], "picas", 1.0) is None


def test_the_same_seed_gives_the_same_run() -> None:
    p = Params(pilots=100, hours=0.25, ramp=60.0, duration_median=120.0, seed=5)
    first, again = simulate(p), simulate(p)
    first.model_cpu_s = again.model_cpu_s = 0.0
    assert first.row() == again.row()
    other = simulate(replace(p, seed=6))
    other.model_cpu_s = 0.0
    assert other.row() != first.row()


def test_picas_runs_tokens_twice_under_contention_and_gridlrt_never() -> None:
    # measured costs; the claimers' CPU and the loopback as in bench/pool_bench.py; requests
    # share the server's CPU, as in node. (A strict FIFO server with identical claimers
    # never lets B's GET fall between A's lock and A's done: each takes one turn of the queue.)
    p = replace(bench("picas", 16, 1000), client_ms=0.5, rtt=0.0002)
    picas = simulate(p)
    gridlrt = simulate(replace(p, client="gridlrt", client_ms=1.6))
    assert picas.processed_twice > 0
    assert picas.extra_runs >= picas.processed_twice
    assert gridlrt.processed_twice == 0
    assert gridlrt.extra_runs == 0
    assert gridlrt.conflicts > 0  # the races happened; the revision check lost them
    assert gridlrt.tokens_done == gridlrt.finished == gridlrt.claims == 1000


def test_picas_runs_no_token_twice_when_claims_never_overlap() -> None:
    # one claim every 10 s on an idle server: the race needs two claims within one request
    p = Params(client="picas", pilots=20, hours=1.0, ramp=200.0, duration_median=200.0,
               duration_sigma=0.0, seed=4)  # fmt: skip
    result = simulate(p)
    assert result.claims > 300
    assert result.processed_twice == 0
    assert result.wasted_pilot_hours == 0


def test_wasted_hours_are_the_duration_of_the_runs_beyond_the_first() -> None:
    p = Params(client="picas", pilots=64, hours=2.0, ramp=1.0, duration_median=600.0,
               duration_sigma=0.0, scale=10.0, rtt=0.05, seed=1)  # fmt: skip
    result = simulate(p)
    assert result.extra_runs > 0
    # every token takes 600 s; runs cut by the end of the simulated time count what they used
    assert 0 < result.wasted_pilot_hours <= result.extra_runs * 600 / 3600 + 1e-9


def test_a_gridlrt_pilot_sends_what_the_code_sends() -> None:
    # one pilot, one token of 95 s, heartbeats every 30 s, then an empty pool
    p = Params(pilots=1, tokens=1, ramp=0.0, duration_median=95.0, duration_sigma=0.0,
               heartbeat=30.0, hours=1.0)  # fmt: skip
    result = simulate(p)
    assert result.by_request == {
        "view_claim": 2,  # the claim, then the empty look that ends the pilot
        "get": 3,  # the candidate, before the attachment, after the finish's 409
        "claim_put": 1,
        "view_unsettled": 2,  # settle after the claim, and after finding nothing
        "put": 3,  # downloading, running, uploading
        "heartbeat": 3,  # at 30, 60 and 90 s
        "attach": 1,
        "put_409": 1,
        "finish": 1,
        "all_docs_keys": 1,
        "bulk_docs_1": 1,
        "status_counts": 1,  # work_may_appear: nothing todo, nothing waiting: stop
    }
    assert result.pilots_ended == 1
    assert result.tokens_done == 1


def test_a_picas_pilot_sends_what_its_client_sends() -> None:
    p = Params(client="picas", pilots=1, tokens=3, ramp=0.0, duration_median=95.0,
               duration_sigma=0.0, hours=1.0)  # fmt: skip
    result = simulate(p)
    # per token: the todo view, GET, PUT lock, PUT done; no heartbeat; an empty view ends it
    assert result.by_request == {"picas_view": 4, "picas_get": 3, "picas_lock": 3,
                                 "picas_done": 3}  # fmt: skip
    assert result.pilots_ended == 1


def test_an_idle_gridlrt_pilot_polls_until_its_idle_timeout() -> None:
    p = Params(pilots=1, tokens=0, ramp=0.0, idle_timeout=60.0, poll=5.0, hours=1.0)
    result = simulate(p)
    # looks at 0, 5, ..., 60 s: 13 empty claims and settles; the status counts from 60 s on
    assert result.by_request == {"view_claim": 13, "view_unsettled": 13, "status_counts": 1}


def test_reading_a_view_pays_for_the_documents_written_since_its_last_read() -> None:
    costs = {**flat(1.0), "index_claim": 10.0}
    p = Params(pilots=1, tokens=1, ramp=0.0, duration_median=95.0, duration_sigma=0.0,
               heartbeat=30.0, hours=1.0, catalogue=False)  # fmt: skip
    base = simulate(p, flat(1.0))
    priced = simulate(p, costs)
    # the first claim view read finds nothing written; the last one finds the token (written
    # 9 times since, one document): 10 ms more
    busy = priced.utilisation * priced.simulated_s - base.utilisation * base.simulated_s
    assert busy == pytest.approx(0.010, abs=1e-6)
    # where the server's time went adds up, with the indexing apart
    assert priced.server_s_by_request["(indexing)"] == pytest.approx(0.010, abs=1e-6)
    assert sum(priced.server_s_by_request.values()) == pytest.approx(
        priced.utilisation * priced.simulated_s, abs=1e-3
    )


def test_helpers() -> None:
    assert percentile([], 0.5) == 0.0
    assert percentile([3.0, 1.0, 2.0], 0.5) == 2.0
    assert percentile([float(i) for i in range(1, 101)], 0.95) == 95.0
    p = Params(pilots=100, hours=4.0, duration_median=1800.0, duration_sigma=1.0)
    mean = 1800.0 * 1.6487  # lognormal mean, sigma 1
    assert default_tokens(p) > 100 * 4 * 3600 / mean
    with pytest.raises(ValueError, match="client"):
        simulate(Params(client="dirac"))


def test_a_todo_view_read_steps_over_every_token_taken_before_its_rows() -> None:
    # pouchdb-server's view index keeps a deleted row for each taken token: PiCaS reads the
    # todo view 4 times, after 0, 1, 2 and 3 of 3 tokens were taken
    p = Params(client="picas", pilots=1, tokens=3, ramp=0.0, duration_median=95.0,
               duration_sigma=0.0, hours=1.0)  # fmt: skip
    base = simulate(p, flat(1.0))
    priced = simulate(p, {**flat(1.0), "picas_view_skip": 10.0})
    busy = priced.utilisation * priced.simulated_s - base.utilisation * base.simulated_s
    assert busy == pytest.approx((0 + 1 + 2 + 3) * 0.010, abs=1e-6)


@pytest.mark.timeout(20)
def test_the_shared_server_keeps_time_after_hours_of_simulated_time() -> None:
    # past 2**13 s a float clock cannot resolve 1e-12 s: completions due "now" must still end
    # (with seed 1 the old test `<= virtual + 1e-12` looped for ever here)
    result = simulate(Params(pilots=20, hours=5.0))
    assert result.simulated_s == 5 * 3600
    assert result.tokens_done > 100
