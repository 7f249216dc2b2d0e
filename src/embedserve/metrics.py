"""Prometheus metrics: every metric the server exports, in one place.

Cheap on the hot paths: a request adds one counter and one histogram sample (in the request
middleware); a forward pass adds a few samples from its batch thread, through children bound
to the model once (:meth:`Metrics.observer`). Queue depth, model state and load time are read
from the registry only when ``/metrics`` is scraped (:class:`_RegistryCollector`), so they cost
nothing in between. Each app has its own ``CollectorRegistry``: nothing global.

    embedserve_requests_total{route,method,model,status}      requests answered
    embedserve_request_duration_seconds{route,method}         latency, middleware in to response out
    embedserve_request_queue_seconds{model}                   time a request's inputs waited in the queue
    embedserve_batch_size{model}                              inputs per forward pass
    embedserve_batch_duration_seconds{model}                  seconds per forward pass
    embedserve_inputs_total{model}                            inputs (texts, pairs) computed
    embedserve_tokens_total{model}                            tokens computed (after truncation)
    embedserve_queue_depth{model}                             inputs queued now
    embedserve_model_state{model,state}                       1 for the model's current state
    embedserve_model_load_seconds{model}                      seconds its last load took
    embedserve_cache_hits_total{model,backend}                inputs found in the embedding cache (memory, redis)
    embedserve_cache_misses_total{model,backend}              inputs looked up there and not found
    embedserve_cache_evictions_total{model,backend}           entries the in-process cache dropped for room
    embedserve_cache_errors_total{model,backend}              Redis calls that failed or timed out (then: misses)
    embedserve_cache_bytes{model,backend}                     bytes the in-process cache holds
    embedserve_cache_capacity_bytes{backend}                  its bound (cache_bytes)
    embedserve_cpu_seconds_total{threads}                     the process's CPU time by what its threads do:
                                                              event_loop, model, tokenizer, other (thread_cpu.py)

The cache's counts are kept by the cache itself (plain integers) and read at scrape time too, as
are the threads' CPU clocks.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from embedserve.batching import Observer
from embedserve.cache import EmbeddingCache
from embedserve.registry import ModelState
from embedserve.thread_cpu import AVAILABLE as THREAD_CLOCKS
from embedserve.thread_cpu import ThreadCPU

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
STATES = tuple(state.value for state in ModelState)


class Metrics:
    """The app's metrics; ``watch`` a registry to export its models' queues and states."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "embedserve_requests", "HTTP requests answered", ["route", "method", "model", "status"], registry=r
        )
        self.latency = Histogram(
            "embedserve_request_duration_seconds",
            "seconds from the request's arrival to its response",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_time = Histogram(
            "embedserve_request_queue_seconds",
            "seconds a request's inputs waited in the model's queue",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "embedserve_batch_size", "inputs per forward pass", ["model"], buckets=BATCH_BUCKETS, registry=r
        )
        self.batch_seconds = Histogram(
            "embedserve_batch_duration_seconds",
            "seconds per forward pass",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.inputs = Counter("embedserve_inputs", "inputs (texts or pairs) computed", ["model"], registry=r)
        self.tokens = Counter("embedserve_tokens", "tokens computed, after truncation", ["model"], registry=r)
        self._children: dict[tuple[str, str, str | None, int], tuple[Any, Any]] = {}
        self.cpu = ThreadCPU()
        if THREAD_CLOCKS:
            r.register(_CPUCollector(self.cpu))

    def observer(self, model_id: str) -> Observer:
        """What the model's batch thread calls after each forward pass (children bound once)."""
        size = self.batch_size.labels(model_id)
        seconds = self.batch_seconds.labels(model_id)
        inputs = self.inputs.labels(model_id)
        tokens = self.tokens.labels(model_id)

        def observe(n_inputs: int, n_tokens: int, elapsed: float) -> None:
            size.observe(n_inputs)
            seconds.observe(elapsed)
            inputs.inc(n_inputs)
            tokens.inc(n_tokens)

        return observe

    def request(self, route: str, method: str, model: str | None, status: int, elapsed: float, queue: float) -> None:
        """One answered request (called by the request middleware); children are looked up once per
        label set, then straight from a dict."""
        key = (route, method, model, status)
        children = self._children.get(key)
        if children is None:
            children = (
                self.requests.labels(route, method, model or "", str(status)),
                self.latency.labels(route, method),
            )
            self._children[key] = children
        children[0].inc()
        children[1].observe(elapsed)
        if model is not None and queue > 0:
            self.queue_time.labels(model).observe(queue)

    def watch(self, models: Callable[[], dict[str, Any]]) -> None:
        """Export queue depth, state and load time of ``models()`` (id → ModelHandle) at scrape time."""
        self.registry.register(_RegistryCollector(models))

    def watch_cache(self, cache: EmbeddingCache) -> None:
        """Export the embedding cache's counts and size at scrape time."""
        self.registry.register(_CacheCollector(cache))

    def watch_loop(self) -> None:
        """Called on the thread that runs the app's event loop: its CPU time is ``event_loop``'s."""
        self.cpu.loop = threading.current_thread()

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _RegistryCollector:
    def __init__(self, models: Callable[[], dict[str, Any]]) -> None:
        self._models = models

    def collect(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily("embedserve_queue_depth", "inputs queued for the model now", labels=["model"])
        state = GaugeMetricFamily(
            "embedserve_model_state", "1 for the model's current state, 0 for the others", labels=["model", "state"]
        )
        load = GaugeMetricFamily(
            "embedserve_model_load_seconds", "seconds the model's last load took", labels=["model"]
        )
        for model_id, handle in self._models().items():
            depth.add_metric([model_id], handle.queue_depth)
            for name in STATES:
                state.add_metric([model_id, name], 1.0 if handle.state.value == name else 0.0)
            if handle.load_seconds is not None:
                load.add_metric([model_id], handle.load_seconds)
        yield depth
        yield state
        yield load


class _CacheCollector:
    def __init__(self, cache: EmbeddingCache) -> None:
        self._cache = cache

    def collect(self) -> Iterator[Metric]:
        cache, labels = self._cache, ["model", "backend"]
        hits = CounterMetricFamily("embedserve_cache_hits", "inputs found in the embedding cache", labels=labels)
        misses = CounterMetricFamily(
            "embedserve_cache_misses", "inputs looked up in the embedding cache and not found", labels=labels
        )
        evictions = CounterMetricFamily(
            "embedserve_cache_evictions", "entries the in-process cache dropped to make room", labels=labels
        )
        errors = CounterMetricFamily(
            "embedserve_cache_errors", "calls to the shared cache that failed or timed out", labels=labels
        )
        held = GaugeMetricFamily("embedserve_cache_bytes", "bytes the in-process embedding cache holds", labels=labels)
        capacity = GaugeMetricFamily(
            "embedserve_cache_capacity_bytes", "bytes the in-process embedding cache may hold", labels=["backend"]
        )
        for (model, tier), n in cache.counts.hits.items():
            hits.add_metric([model, tier], n)
        for (model, tier), n in cache.counts.misses.items():
            misses.add_metric([model, tier], n)
        if cache.memory is not None:
            capacity.add_metric(["memory"], cache.memory.max_bytes)
            for model, n in cache.memory.bytes_by_model.items():
                held.add_metric([model, "memory"], n)
            for model, n in cache.memory.evictions.items():
                evictions.add_metric([model, "memory"], n)
        if cache.shared is not None:
            for model, n in cache.shared.errors.items():
                errors.add_metric([model, "redis"], n)
        yield from (hits, misses, evictions, errors, held, capacity)


class _CPUCollector:
    def __init__(self, cpu: ThreadCPU) -> None:
        self._cpu = cpu

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "embedserve_cpu_seconds", "CPU seconds of the process, by what its threads do", labels=["threads"]
        )
        for role, seconds in self._cpu.read().items():
            family.add_metric([role], seconds)
        yield family
