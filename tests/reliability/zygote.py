"""A fork server for the crash tests: import seglearn's CLI (torch, MONAI ...) once, then fork one
child per command. Each child is a real, separate process running ``seglearn.cli.app.main()`` with
the given argv, so SIGKILL, flock release and SQLite recovery behave exactly as for
``.venv/bin/seglearn``; forking only skips the ~5 s of imports, so two dozen kills fit in a minute.

Protocol (one JSON object per line on stdin, one reply per line on stdout):
  {"argv": [...], "log": PATH, "spy": PATH|null, "env": {...}}  -> {"pid": N}  start a command
  {"wait": N}                                     -> {"status": S}  reap it: exit code or -signal
The parent prints {"ready": true} once the imports are done.

``spy``: the child appends one JSON line per event to this file: every ``fit`` call
({"event": "fit", "checkpoint", "resumed_from", "steps"}) and every ensemble inference
({"event": "predict"}, one per image), so a test can see what a killed-and-rerun command recomputed.
``die_after``: ["module", "function", n]: the child SIGKILLs itself right after the n-th call of
``module.function`` returns: a kill at an exact point (inside a label transaction, between
writing a model file and recording it) that random delays would rarely hit.
"""

from __future__ import annotations

import json
import os
import sys


def _preload() -> None:
    import torch  # noqa: F401
    import monai.inferers  # noqa: F401

    import seglearn.app.init  # noqa: F401
    import seglearn.app.label  # noqa: F401
    import seglearn.app.select  # noqa: F401
    import seglearn.app.train  # noqa: F401
    import seglearn.cli.app  # noqa: F401
    import seglearn.data.transforms  # noqa: F401
    import seglearn.models.ensemble  # noqa: F401
    import seglearn.report.sheets  # noqa: F401

    # The first optimizer imports torch._dynamo (~2 s): do it here, not in every child.
    torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))])


def _install_spy(path: str) -> None:
    import seglearn.app.train as app_train
    from seglearn.models.ensemble import Ensemble

    def log(**event) -> None:
        with open(path, "a") as fh:
            fh.write(json.dumps(event) + "\n")

    real_fit = app_train.fit

    def fit(model, batches, cfg, steps=None, checkpoint=None, resume=False, **kw):
        res = real_fit(model, batches, cfg, steps=steps, checkpoint=checkpoint, resume=resume, **kw)
        log(event="fit", checkpoint=str(checkpoint), resumed_from=res.resumed_from, steps=res.steps)
        return res

    app_train.fit = fit
    real_predict_many = Ensemble.predict_many  # Ensemble.predict runs it too

    def predict_many(self, images, *a, **kw):
        for _ in images:
            log(event="predict")
        return real_predict_many(self, images, *a, **kw)

    Ensemble.predict_many = predict_many


def _install_die_after(module: str, name: str, n: int) -> None:
    import importlib
    import signal

    mod = importlib.import_module(module)
    real = getattr(mod, name)
    calls = [0]

    def wrapped(*a, **kw):
        out = real(*a, **kw)
        calls[0] += 1
        if calls[0] >= n:
            sys.stdout.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        return out

    setattr(mod, name, wrapped)


def _child(req: dict) -> None:
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)  # the protocol pipe belongs to the server
    os.close(null)
    fd = os.open(req["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    code = 1
    try:
        import torch

        torch.set_num_threads(1)  # the test machine's cores are shared
        os.environ.update(req.get("env") or {})
        if req.get("spy"):
            _install_spy(req["spy"])
        if req.get("die_after"):
            _install_die_after(*req["die_after"])
        sys.argv = ["seglearn", *req["argv"]]
        from seglearn.cli.app import main

        main()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:  # noqa: BLE001 - a traceback is a test failure; show it in the log
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def main() -> None:
    _preload()
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        if "wait" in req:
            _, status = os.waitpid(int(req["wait"]), 0)
            code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
            print(json.dumps({"status": code}), flush=True)
            continue
        pid = os.fork()
        if pid == 0:
            _child(req)
        print(json.dumps({"pid": pid}), flush=True)


if __name__ == "__main__":
    main()
