"""Compute backends: where ensemble members train and where the pool is scored.

``compute.backend = local`` (the default) runs everything in this process, one member after the
other and the pool in chunks of ``BATCH_IMAGES``: exactly seglearn's single-machine behaviour.
``compute.backend = ray`` runs the same work on a Ray cluster (https://docs.ray.io):

* each member is one Ray task (``compute.cpus_per_task`` CPUs, retried ``compute.max_retries``
  times when its worker dies or it raises a transient error, resuming from its last checkpoint);
  the labeled samples go into the object store once (``ray.put``) and every task reads them there;
  results come back as the members finish and the driver writes each member's files and row;
* the pool is cut into chunks of ``compute.chunk`` images that the driver reads and ships to a
  few scoring actors (each loads the ensemble once); the driver stores each chunk's scores as it
  arrives, with at most two chunks in flight per actor, so its memory does not grow with the pool.

``compute.address``: ``auto`` = the cluster in ``$RAY_ADDRESS`` when set, else a new local cluster
in this process (``ray.init(address="local")``); ``HOST:PORT`` (or ``ray://HOST:PORT``) = a running
cluster, probed with a TCP connection first (``PROBE_SECONDS``) so a wrong address fails at once
with the address named instead of hanging in ``ray.init``.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Callable, Iterable, Iterator

from seglearn.compute.members import MemberJob, MemberOutcome, MemberSpec, remote_member, run_member

PROBE_SECONDS = 3.0
#: Errors a member task is retried on besides a dead worker (always retried): transient ones
#: (a file system hiccup, a torch runtime error). ValueErrors (bad data, a diverged training)
#: would fail the same way again, so they end the round at once.
RETRIED = (OSError, RuntimeError, MemoryError)
#: Chunks queued per scoring actor: one running, one waiting, so an actor never idles on the
#: driver's reading while the driver holds at most 2 * actors chunks of images.
IN_FLIGHT_PER_ACTOR = 2


class ComputeError(ValueError):
    """The compute backend cannot run the work: ray missing, a cluster that does not answer, a
    task whose worker kept dying."""


def set_task_threads(n: int) -> None:
    """torch and numba threads to ``n``, the task's CPU share (Ray sets only OMP_NUM_THREADS; torch
    would otherwise start one thread per core of the node, oversubscribing it N tasks times)."""
    import torch  # lazy: seglearn.compute itself imports with numpy only; torch in the task

    torch.set_num_threads(max(1, int(n)))
    try:
        import numba  # lazy: as torch above (a task that scores nothing need not load it)

        numba.set_num_threads(max(1, min(int(n), numba.config.NUMBA_NUM_THREADS)))
    except ImportError:  # numba is a dependency; a worker without it only misses this setting
        pass


class LocalBackend:
    """In this process, in order: today's single-machine behaviour."""

    name = "local"

    def train_members(self, spec: MemberSpec, jobs: list[MemberJob],
                      samples: list[dict]) -> Iterator[MemberOutcome]:
        for job in jobs:
            yield run_member(samples, spec, job)

    def score(self, ens, items: list, read: Callable, reduction: str, device: str,
              batch: int) -> Iterator[tuple[list, list]]:
        """(chunk of items, [(scores, descriptor)] of each) per ``batch`` items, in order."""
        from seglearn.app.select import image_scores_many  # lazy: cycle (app.select imports compute)

        for start in range(0, len(items), batch):
            chunk = items[start:start + batch]
            yield chunk, image_scores_many(ens, [read(it) for it in chunk], reduction, device)


def import_ray():
    try:
        import ray  # lazy: an optional dependency (seglearn[ray])
    except ImportError:
        raise ComputeError("compute.backend=ray needs the ray package: "
                           "pip install 'seglearn[ray]' (or pip install 'ray>=2.9')") from None
    return ray


def _host_port(address: str) -> tuple[str, int] | None:
    """(host, port) of ``HOST:PORT`` or ``ray://HOST:PORT``; None for Ray's own words (auto)."""
    rest = address.split("://", 1)[1] if "://" in address else address
    host, sep, port = rest.rpartition(":")
    if not sep or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def probe(address: str, timeout: float = PROBE_SECONDS) -> None:
    """ComputeError naming ``address`` unless something accepts a TCP connection there."""
    hp = _host_port(address)
    if hp is None:
        return
    try:
        socket.create_connection(hp, timeout=timeout).close()
    except OSError as e:
        reason = "timed out" if isinstance(e, socket.timeout) else (e.strerror or str(e))
        raise ComputeError(
            f"compute.address={address}: no Ray cluster answers at {hp[0]}:{hp[1]} ({reason}, "
            f"waited at most {timeout:g} s); start one there with `ray start --head --port="
            f"{hp[1]}`, or set compute.address=auto for a local cluster") from None


def connect(address: str) -> str:
    """Connect this process to Ray at ``address`` (see the module doc); returns what it used.
    A process already connected (``ray.init`` called before, e.g. by a test) keeps its cluster."""
    ray = import_ray()
    target = os.environ.get("RAY_ADDRESS") if address == "auto" else address
    if target:
        probe(target)
    if ray.is_initialized():
        return target or "local"
    try:
        ray.init(address=target or "local", include_dashboard=False, log_to_driver=False,
                 logging_level=logging.WARNING)
    except Exception as e:  # noqa: BLE001 - ray raises ConnectionError, RuntimeError, ...
        where = target or "a local cluster"
        raise ComputeError(f"compute.address={address}: cannot connect to Ray at {where}: "
                           f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    return target or "local"


class RayBackend:
    """Members as Ray tasks, the pool as chunks on Ray actors (see the module doc).

    ``member_fn``: the task body (default :func:`~seglearn.compute.members.remote_member`); a
    seam for tests and ``bench/scale.py`` to make a task fail or be killed.
    """

    name = "ray"

    def __init__(self, cfg, member_fn: Callable | None = None):
        self.compute = cfg.compute
        self.member_fn = member_fn or remote_member
        self.address = connect(cfg.compute.address)

    def train_members(self, spec: MemberSpec, jobs: list[MemberJob],
                      samples: list[dict]) -> Iterator[MemberOutcome]:
        """Every job as one task at once; outcomes in the order they finish."""
        if not jobs:
            return
        ray = import_ray()
        c = self.compute
        ref = ray.put(samples)  # once: every task reads the same object
        task = ray.remote(self.member_fn).options(
            num_cpus=c.cpus_per_task, max_retries=c.max_retries, retry_exceptions=list(RETRIED))
        pending = {task.remote(ref, spec, job): job for job in jobs}
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                job = pending.pop(done[0])
                yield self._get(done[0], f"{spec.role} member {job.member}")
        finally:
            # A failed member ends the round: stop the others' work. Not force=True: that kills
            # the worker process, the heaviest path through Ray's raylet, while the interrupt a
            # plain cancel raises lands between the member's training steps just as well.
            for r in pending:
                ray.cancel(r)

    def score(self, ens, items: list, read: Callable, reduction: str, device: str,
              batch: int) -> Iterator[tuple[list, list]]:
        """(chunk of items, results) per ``compute.chunk`` items, in the order chunks finish."""
        if not items:
            return
        ray = import_ray()
        from seglearn.compute.scoring import ChunkScorer, pack_ensemble  # lazy: cycle with scoring

        c = self.compute
        chunks: Iterable[list] = (items[i:i + c.chunk] for i in range(0, len(items), c.chunk))
        n_chunks = -(-len(items) // c.chunk)
        cpus = ray.cluster_resources().get("CPU", 1.0)
        n_actors = max(1, min(n_chunks, int(cpus // c.cpus_per_task)))
        packed = ray.put(pack_ensemble(ens))  # once for all actors
        actor_cls = ray.remote(ChunkScorer).options(
            num_cpus=c.cpus_per_task, max_restarts=c.max_retries, max_task_retries=c.max_retries)
        actors = [actor_cls.remote(packed, reduction, device, batch, c.cpus_per_task)
                  for _ in range(n_actors)]
        pending: dict = {}

        def submit(actor) -> bool:
            chunk = next(chunks, None)
            if chunk is None:
                return False
            pending[actor.score.remote([read(it) for it in chunk])] = (actor, chunk)
            return True

        try:
            for actor in actors:
                for _ in range(IN_FLIGHT_PER_ACTOR):
                    submit(actor)
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                actor, chunk = pending.pop(done[0])
                results = self._get(done[0], f"scoring a chunk of {len(chunk)} pool images")
                submit(actor)
                yield chunk, results
        finally:
            for actor in actors:
                ray.kill(actor)

    def _get(self, ref, what: str):
        """``ray.get(ref)``; a task's own error re-raised as itself when it is seglearn's or a
        ValueError (bad input: the CLI prints it), anything else as one ComputeError line."""
        ray = import_ray()
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as e:
            cause = getattr(e, "cause", None)
            if isinstance(cause, ValueError) or type(cause).__module__.startswith("seglearn."):
                raise cause from None
            detail = f"{type(cause).__name__}: {cause}" if cause is not None else str(e)
            raise ComputeError(f"{what} failed on Ray after {self.compute.max_retries} "
                               f"retries: {detail.splitlines()[0]}") from None
        except ray.exceptions.RayError as e:
            raise ComputeError(
                f"{what}: its Ray worker or node died {self.compute.max_retries + 1} times "
                f"({type(e).__name__}); work already stored is kept: rerun the command "
                "(`seglearn train --resume` for a training round)") from None


def get_backend(cfg) -> LocalBackend | RayBackend:
    """The backend ``compute.backend`` names; Ray is connected here, before any work."""
    if cfg.compute.backend == "ray":
        return RayBackend(cfg)
    return LocalBackend()
