#!/usr/bin/env python3
"""A Drover worker in plain Python 3, standard library only.

It leases jobs from a Drover server over HTTP, runs a handler per job kind,
keeps each lease alive with heartbeats while the handler runs, and then
completes or fails the job. See README.md next to this file, and
docs/api.md for the protocol.

    python3 worker.py --server http://127.0.0.1:8080 --queue default --concurrency 4

Add your own kinds to HANDLERS (kind -> function). A handler gets the
leased job (a dict: id, kind, args, attempt, ...) and returns the job's
output (any JSON value, or None for no output). Raising an exception fails
the attempt: the server retries the job with backoff while attempts remain.
"""

import argparse
import http.client
import json
import logging
import os
import random
import signal
import socket
import sys
import threading
import time
import traceback
import urllib.error
import urllib.request

log = logging.getLogger("drover.worker")


# ---------------------------------------------------------------------------
# Handlers: kind -> function(job) -> output


def echo(job):
    """Returns its args as the job's output."""
    return job["args"]


def fail(job):
    """Always raises, to show how a failure is recorded."""
    args = job["args"] if isinstance(job["args"], dict) else {}
    raise RuntimeError(args.get("message", "this job always fails"))


def sleep(job):
    """Sleeps args.seconds (default 1), to show heartbeats at work."""
    args = job["args"] if isinstance(job["args"], dict) else {}
    time.sleep(float(args.get("seconds", 1)))
    return {"slept": args.get("seconds", 1)}


HANDLERS = {
    "echo": echo,
    "fail": fail,
    "sleep": sleep,
}


# ---------------------------------------------------------------------------
# The HTTP client


class APIError(Exception):
    """The server answered with a problem (RFC 9457) that retrying will not fix."""

    def __init__(self, status, code, detail):
        super().__init__("%s %s: %s" % (status, code, detail))
        self.status = status
        self.code = code
        self.detail = detail


class LeaseLost(APIError):
    """409 lease_lost, or 404: this worker no longer holds the job."""


class Transient(Exception):
    """The server could not be reached, or asked us to come back later."""

    def __init__(self, message, retry_after=None):
        super().__init__(message)
        self.retry_after = retry_after


def duration(seconds):
    """Formats seconds as a Drover duration string such as "1.5s"."""
    text = ("%.3f" % seconds).rstrip("0").rstrip(".")
    return (text or "0") + "s"


class Client:
    def __init__(self, server, token=None):
        self.server = server.rstrip("/")
        self.headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if token:
            self.headers["Authorization"] = "Bearer " + token

    def post(self, path, body, timeout=10.0):
        """POSTs body as JSON and returns the decoded JSON reply."""
        req = urllib.request.Request(
            self.server + path,
            data=json.dumps(body).encode("utf-8"),
            headers=self.headers,
            method="POST",
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return json.load(resp)
        except urllib.error.HTTPError as e:
            raise self._problem(e) from None
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as e:
            # Refused or reset connections, timeouts, a reply cut short.
            raise Transient("%s %s: %s" % (req.get_method(), path, e)) from None

    @staticmethod
    def _problem(e):
        try:
            p = json.loads(e.read().decode("utf-8"))
        except (ValueError, OSError):
            p = {}
        code = p.get("code", "")
        detail = p.get("detail", e.reason)
        if e.code == 429 or e.code >= 500:
            retry_after = None
            try:
                retry_after = float(e.headers.get("Retry-After", ""))
            except (TypeError, ValueError):
                pass
            return Transient("%s %s: %s" % (e.code, code, detail), retry_after)
        if code == "lease_lost" or e.code == 404:
            return LeaseLost(e.code, code or "not_found", detail)
        return APIError(e.code, code, detail)


def backoff(attempt, retry_after=None):
    """Seconds to wait before retry number attempt (0-based) of a transient error."""
    if retry_after is not None:
        return retry_after
    return min(5.0, 0.25 * 2 ** attempt) * random.uniform(0.5, 1.0)


# ---------------------------------------------------------------------------
# The worker


class Heartbeat:
    """Extends a job's lease every lease_for/3 seconds in a background thread."""

    def __init__(self, client, job, lease_for):
        self.client = client
        self.job = job
        self.lease_for = lease_for
        self.lost = threading.Event()  # set when the server says the lease is gone
        self._done = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="heartbeat-%s" % job["id"], daemon=True
        )

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._done.set()
        self._thread.join()

    def _run(self):
        interval = self.lease_for / 3.0
        body = {"lease_token": self.job["lease_token"], "lease_for": duration(self.lease_for)}
        while not self._done.wait(interval):
            try:
                self.client.post("/v1/jobs/%d/heartbeat" % self.job["id"], body)
                interval = self.lease_for / 3.0
            except LeaseLost as e:
                log.warning("job %d: lease lost while running (%s); its result will be dropped",
                            self.job["id"], e.detail)
                self.lost.set()
                return
            except (Transient, APIError) as e:
                # Try again sooner; the lease still has about two intervals left.
                log.warning("job %d: heartbeat failed: %s", self.job["id"], e)
                interval = min(1.0, self.lease_for / 6.0)


class Worker:
    def __init__(self, opts, handlers):
        self.opts = opts
        self.handlers = handlers
        self.client = Client(opts.server, opts.token)
        self.stopping = threading.Event()
        self.exit_code = 0
        self._lock = threading.Lock()
        self._free = opts.concurrency  # slots for jobs, guarded by _lock
        self._slot_freed = threading.Condition(self._lock)
        self._taken = 0  # jobs leased so far, for --max-jobs
        self._settled = 0  # jobs finished so far
        self._last_job = time.monotonic()  # for --idle-exit
        self._threads = []

    def stop(self, why):
        if not self.stopping.is_set():
            log.info("stopping (%s): finishing running jobs", why)
            self.stopping.set()
        with self._lock:
            self._slot_freed.notify_all()

    # The fetch loop runs in its own thread: it long-polls for as many jobs as
    # there are free slots and starts a thread per job.
    def fetch_loop(self):
        failures = 0
        while not self.stopping.is_set():
            want = self._wait_for_slots()
            if want == 0:
                continue
            body = {
                "queues": self.opts.queue,
                "max": want,
                "wait": duration(self._poll_wait()),
                "lease_for": duration(self.opts.lease_for),
                "worker": self.opts.worker,
            }
            try:
                jobs = self.client.post("/v1/lease", body, timeout=self.opts.wait + 15)["jobs"]
                failures = 0
            except Transient as e:
                self._unreserve(want)
                delay = backoff(failures, e.retry_after)
                failures += 1
                log.warning("lease failed: %s; retrying in %.1fs", e, delay)
                self.stopping.wait(delay)
                continue
            except APIError as e:
                self._unreserve(want)
                log.error("lease refused, check the options: %s", e)
                self.exit_code = 2
                self.stop("lease refused")
                break
            self._unreserve(want - len(jobs))
            if jobs:
                with self._lock:
                    self._last_job = time.monotonic()
            elif self.opts.wait < 1:
                self.stopping.wait(1.0)  # no long poll: do not spin on an empty queue
            for job in jobs:
                if self.stopping.is_set():
                    # Leased as we were told to stop: give it back at once,
                    # without using up an attempt.
                    self._give_back(job)
                    self._unreserve(1)
                    continue
                t = threading.Thread(target=self._run_job, args=(job,), name="job-%d" % job["id"])
                self._threads.append(t)
                t.start()
            self._threads = [t for t in self._threads if t.is_alive()]
            self._check_idle()

    def _wait_for_slots(self):
        """Takes every free slot (at least one), up to --max-jobs; 0 if stopping."""
        with self._lock:
            while self._free == 0 and not self.stopping.is_set():
                self._slot_freed.wait(0.5)
            if self.stopping.is_set():
                return 0
            want = self._free
            if self.opts.max_jobs:
                want = min(want, self.opts.max_jobs - self._taken)
                if want <= 0:
                    # Every job we may take is taken; stop once they are done.
                    if self._settled >= self.opts.max_jobs:
                        self.stopping.set()
                    else:
                        self._slot_freed.wait(0.5)
                    return 0
            self._free -= want
            self._taken += want
            return want

    def _unreserve(self, n):
        """Returns n slots that were reserved for a lease but got no job."""
        if n <= 0:
            return
        with self._lock:
            self._free += n
            self._taken -= n
            self._slot_freed.notify_all()

    def _poll_wait(self):
        """How long one long poll may wait: --wait, or less to notice --idle-exit."""
        wait = self.opts.wait
        if self.opts.idle_exit:
            with self._lock:
                idle = time.monotonic() - self._last_job
            wait = min(wait, max(1.0, self.opts.idle_exit - idle))
        return wait

    def _check_idle(self):
        if not self.opts.idle_exit:
            return
        with self._lock:
            idle = time.monotonic() - self._last_job
            running = self.opts.concurrency - self._free
        if running == 0 and idle >= self.opts.idle_exit:
            self.stop("no job for %gs" % self.opts.idle_exit)

    def _give_back(self, job):
        try:
            self.client.post("/v1/jobs/%d/snooze" % job["id"],
                             {"lease_token": job["lease_token"], "delay": "0s"})
            log.info("job %d (%s): given back unstarted", job["id"], job["kind"])
        except (Transient, APIError) as e:
            log.warning("job %d: could not give it back (%s); its lease will expire", job["id"], e)

    def _run_job(self, job):
        try:
            self._work(job)
        except Exception:  # a bug in this file, not in a handler
            log.exception("job %d: unexpected error", job["id"])
        finally:
            with self._lock:
                self._settled += 1
                self._free += 1
                self._last_job = time.monotonic()
                self._slot_freed.notify_all()
                done = self.opts.max_jobs and self._settled >= self.opts.max_jobs
            if done:
                self.stop("--max-jobs %d reached" % self.opts.max_jobs)

    def _work(self, job):
        jid, kind = job["id"], job["kind"]
        started = time.monotonic()
        handler = self.handlers.get(kind)
        output, error, detail = None, None, ""
        with Heartbeat(self.client, job, self.opts.lease_for) as hb:
            try:
                if handler is None:
                    raise LookupError("no handler for kind %r in this worker" % kind)
                output = handler(job)
                json.dumps(output)  # the output must be JSON
            except Exception as e:  # the handler failed: record it on the job
                error, detail = e, traceback.format_exc()
        took = time.monotonic() - started
        if hb.lost.is_set():
            log.warning("job %d (%s): finished after its lease was lost; result dropped", jid, kind)
            return
        if error is None:
            body = {"lease_token": job["lease_token"]}
            if output is not None:
                body["output"] = output
            try:
                if self._settle(job, "complete", body):
                    log.info("job %d (%s) completed in %.3fs (attempt %d)", jid, kind, took, job["attempt"])
                return
            except APIError as e:
                # Such as an output over the size limit: record it as a failure
                # rather than leave the job to time out.
                error, detail = e, "complete was refused: %s" % e
        message = "%s: %s" % (type(error).__name__, error)
        body = {"lease_token": job["lease_token"], "error": message[:65536], "detail": detail[-65536:]}
        try:
            if self._settle(job, "fail", body):
                log.info("job %d (%s) failed in %.3fs (attempt %d of %d): %s",
                         jid, kind, took, job["attempt"], job["max_attempts"], message)
        except APIError as e:
            log.error("job %d: fail refused: %s; the server will re-deliver it when its lease expires", jid, e)

    def _settle(self, job, verb, body):
        """POSTs complete or fail, retrying transient errors while the lease lasts.

        Returns True when settled, False when the result was dropped (the
        lease was lost, or the server stayed unreachable); raises APIError
        when the server refused the request itself.

        Repeating a settle with the same token is safe: if the first reply was
        lost, the server answers the repeat with the job as settled before.
        """
        deadline = time.monotonic() + self.opts.lease_for
        attempt = 0
        while True:
            try:
                self.client.post("/v1/jobs/%d/%s" % (job["id"], verb), body)
                return True
            except LeaseLost as e:
                log.warning("job %d: %s refused, lease lost (%s); result dropped", job["id"], verb, e.detail)
                return False
            except Transient as e:
                delay = backoff(attempt, e.retry_after)
                attempt += 1
                if time.monotonic() + delay > deadline:
                    log.error("job %d: %s failed, giving up: %s (the server will re-deliver it)",
                              job["id"], verb, e)
                    return False
                log.warning("job %d: %s failed: %s; retrying in %.1fs", job["id"], verb, e, delay)
                time.sleep(delay)

    def run(self):
        log.info("worker %s: queues %s on %s, concurrency %d",
                 self.opts.worker, ",".join(self.opts.queue), self.opts.server, self.opts.concurrency)
        fetcher = threading.Thread(target=self.fetch_loop, name="fetch", daemon=True)
        fetcher.start()
        # Wait in short steps so that signals are handled promptly.
        while fetcher.is_alive():
            fetcher.join(0.2)
        for t in list(self._threads):
            while t.is_alive():
                t.join(0.2)
        log.info("worker stopped after %d job(s)", self._settled)
        return self.exit_code


# ---------------------------------------------------------------------------
# Command line


def positive_int(text):
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return n


def seconds(text):
    s = float(text)
    if s < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return s


def parse_args(argv):
    p = argparse.ArgumentParser(description="A Drover worker over HTTP, standard library only.")
    p.add_argument("--server", default=os.environ.get("DROVER_SERVER", "http://127.0.0.1:8080"),
                   help="the Drover server (default $DROVER_SERVER or http://127.0.0.1:8080)")
    p.add_argument("--token", default=os.environ.get("DROVER_TOKEN"),
                   help="a bearer token with the worker scope, when the server requires tokens "
                        "(default $DROVER_TOKEN)")
    p.add_argument("--queue", action="append", metavar="NAME",
                   help="a queue to work; repeat for several (default: default)")
    p.add_argument("--concurrency", type=positive_int, default=1, metavar="N",
                   help="jobs to run at once, each in its own thread (default 1)")
    p.add_argument("--max-jobs", type=positive_int, default=None, metavar="N",
                   help="exit after N jobs (for tests)")
    p.add_argument("--idle-exit", type=seconds, default=None, metavar="SECONDS",
                   help="exit when no job arrived for this long (for tests)")
    p.add_argument("--wait", type=seconds, default=10.0, metavar="SECONDS",
                   help="how long one lease call waits for a job (long poll; default 10, at most 60)")
    p.add_argument("--lease-for", type=seconds, default=30.0, metavar="SECONDS",
                   help="lease length; heartbeats every third of it (default 30, at least 1)")
    p.add_argument("--worker", default="%s-%d" % (socket.gethostname(), os.getpid()),
                   help="this worker's name, shown to operators (default HOST-PID)")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    opts = p.parse_args(argv)
    opts.queue = opts.queue or ["default"]
    if opts.lease_for < 1:
        p.error("--lease-for must be at least 1 second")
    return opts


def main(argv=None):
    opts = parse_args(argv)
    logging.basicConfig(level=opts.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(threadName)s: %(message)s")
    worker = Worker(opts, HANDLERS)

    def on_signal(signum, _frame):
        if worker.stopping.is_set():
            log.warning("second %s: exiting now; running jobs will be re-delivered",
                        signal.Signals(signum).name)
            os._exit(1)
        worker.stop(signal.Signals(signum).name)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    return worker.run()


if __name__ == "__main__":
    sys.exit(main())
