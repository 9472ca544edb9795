"""The query server: the service over HTTP, one process keeping the pool warm between queries.

A query through `Run_Service.py` spends ~2.7 s starting Python and importing torch for a model
that is ready in milliseconds; a process that stays up answers from poe.realtime's cache of
folded experts instead. The standard library's ThreadingHTTPServer is enough for a JSON API and
one page, and adds no dependency (see the README).

    GET  /                      the web page (server_page.html)
    GET  /health                {"status": "ok", ...}
    GET  /tasks                 the pool's primitive tasks, their classes, whether each has an expert
    POST /query                 {"tasks": [...], "evaluate": false} -> the report `--json` writes
    GET  /model.pt2?tasks=a,b   the task model as a torch.export program (built once per set, kept)

Errors are JSON {"error": "..."} with a 4xx status (5xx: the pool's own files are broken); no
request stops the server. Files replaced on disk are picked up by the next query (the caches
are keyed by file identity and modification time).
"""
from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import os
import re
import signal
import sys
import tempfile
import threading
import time
import traceback
from collections import OrderedDict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from .errors import MissingExpert, PoEError
from .pool import Pool
from .realtime import CACHE
from .service import build_task_model, check_query, export, query_report

PAGE = Path(__file__).with_name("server_page.html")
MAX_BODY = 64 * 1024  # a query is a list of task names: a few hundred bytes
MODEL_CACHE_BYTES = 512 * 2**20  # exported programs kept in memory (a CIFAR 5-task model: ~0.4 MB)


class ApiError(Exception):
    """A request the server refuses: HTTP status and one message for the client."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


class QueryService:
    """What the server answers, apart from HTTP: the pool, the test data if any, the exports."""

    def __init__(self, pool: Pool, *, test=None, no_test_reason: str = "started with --no-eval",
                 device="cpu", amp="none", fuse: bool = True, model_cache_bytes: int = MODEL_CACHE_BYTES):
        self.pool, self.profile = pool, pool.profile
        self.test, self.no_test_reason = test, no_test_reason
        self.device, self.amp, self.fuse = device, amp, fuse
        self.started = time.time()
        self.evaluating = threading.Lock()  # one evaluation at a time: it uses every core
        self.exporting = threading.Lock()   # torch.export is not made for concurrent calls
        self.models, self.models_lock, self.model_cache_bytes = OrderedDict(), threading.Lock(), model_cache_bytes
        self.exports = 0

    # -- the API ---------------------------------------------------------------------------------
    def health(self) -> dict:
        return {"status": "ok", "dataset": self.profile.name, "pool": str(self.pool.root),
                "experts": len(self.pool.experts_available()), "tasks": len(self.profile.hierarchy),
                "evaluate": self.test is not None, "uptime_s": round(time.time() - self.started, 1),
                "cache": {"pieces": len(CACHE.items), "hits": CACHE.hits, "misses": CACHE.misses},
                "models": {"kept": len(self.models), "built": self.exports}}

    def tasks(self) -> dict:
        names = self.profile.class_names
        return {"dataset": self.profile.name, "title": self.profile.title, "pool": str(self.pool.root),
                "evaluate": self.test is not None,
                "evaluate_note": None if self.test is not None else f"no test data: {self.no_test_reason}",
                "tasks": [{"name": t, "class_ids": ids, "classes": [names[c] for c in ids],
                           "expert": self.pool.has_expert(t)} for t, ids in self.profile.hierarchy.items()]}

    def query(self, body: dict) -> dict:
        unknown = sorted(set(body) - {"tasks", "evaluate"})
        if unknown:
            raise ApiError(400, f"unknown field(s) {', '.join(unknown)}; a query is "
                                '{"tasks": [TASK, ...], "evaluate": false}')
        evaluate = body.get("evaluate", False)
        if not isinstance(evaluate, bool):
            raise ApiError(400, '"evaluate" must be true or false')
        tasks = self.checked_tasks(body.get("tasks"))
        if evaluate and self.test is None:
            raise ApiError(409, f"this server cannot evaluate (no test data: {self.no_test_reason}); "
                                'query with "evaluate": false')
        with self.evaluating if evaluate else contextlib.nullcontext():
            _, report = self.pool_call(query_report, self.pool, tasks, fuse=self.fuse,
                                       test=self.test if evaluate else None, device=self.device, amp=self.amp)
        return report

    def model_file(self, names) -> tuple[bytes, str]:
        """The .pt2 of the query's task set: (bytes, file name). Built once per set of tasks and
        the library's and experts' files as they are now; kept, least recently used dropped."""
        tasks = self.checked_tasks(names)
        order = list(self.profile.hierarchy)
        tasks = sorted(tasks, key=order.index)  # a set of tasks: one program whatever the order asked
        key = (tuple(tasks), self.pool_call(self.file_signature, tasks))
        data = self.kept_model(key)
        if data is None:
            with self.exporting:
                data = self.kept_model(key)  # another request may have built it meanwhile
                if data is None:
                    data = self.pool_call(self.export_bytes, tasks)
                    self.keep_model(key, data)
        return data, self.file_name(tasks)

    # -- helpers ---------------------------------------------------------------------------------
    def checked_tasks(self, names) -> list[str]:
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ApiError(400, '"tasks" must be a list of task names, e.g. {"tasks": ["'
                                + '", "'.join(list(self.profile.hierarchy)[:2]) + '"]}')
        try:
            tasks = self.profile.resolve_tasks(names, "query")
            check_query(self.pool, tasks)
        except MissingExpert as exc:
            raise ApiError(409, str(exc)) from None
        except PoEError as exc:
            raise ApiError(400, str(exc)) from None
        return tasks

    @staticmethod
    def pool_call(fn, *args, **kwargs):
        """fn(...) once the request is valid: a PoEError now is the pool's (an unreadable file)."""
        try:
            return fn(*args, **kwargs)
        except PoEError as exc:
            raise ApiError(500, f"the pool cannot answer: {exc}") from None

    def file_signature(self, tasks: list[str]) -> tuple:
        paths = [self.pool.library_path, *(self.pool.expert_path(t) for t in tasks)]
        try:
            stats = [os.stat(p) for p in paths]
        except OSError as exc:
            raise PoEError(f"cannot read {exc.filename}: {exc.strerror}") from None
        return tuple((s.st_ino, s.st_mtime_ns, s.st_size) for s in stats)

    def export_bytes(self, tasks: list[str]) -> bytes:
        model, _ = build_task_model(self.pool, tasks, fuse=self.fuse)
        with tempfile.TemporaryDirectory(prefix="poe-export-") as folder:
            path = Path(folder) / "model.pt2"
            export(model, self.profile, self.profile.input_shape, path)
            self.exports += 1
            return path.read_bytes()

    def kept_model(self, key) -> bytes | None:
        with self.models_lock:
            if key in self.models:
                self.models.move_to_end(key)
                return self.models[key]
        return None

    def keep_model(self, key, data: bytes) -> None:
        with self.models_lock:
            self.models[key] = data
            while len(self.models) > 1 and sum(map(len, self.models.values())) > self.model_cache_bytes:
                self.models.popitem(last=False)

    def file_name(self, tasks: list[str]) -> str:
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", "-".join(tasks))
        if len(stem) > 80:
            stem = f"{len(tasks)}tasks-{hashlib.sha1(stem.encode()).hexdigest()[:10]}"
        return f"poe-{self.profile.name}-{stem}.pt2"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: a client's queries share one connection
    server_version = "PoE"
    timeout = 30  # seconds a client may take to send its request (a stalled one frees its thread)
    # Headers and body go out in two writes; with Nagle's algorithm the second waits for the
    # client's delayed ACK (~40 ms a query, measured).
    disable_nagle_algorithm = True

    @property
    def service(self) -> QueryService:
        return self.server.service

    def do_GET(self):
        self.answer(self.get)

    def do_POST(self):
        self.answer(self.post)

    def do_PUT(self):
        self.answer(self.other_method)

    do_DELETE = do_PATCH = do_PUT

    def get(self):
        url = urlsplit(self.path)
        if url.path == "/":
            return self.send(200, PAGE.read_bytes(), "text/html; charset=utf-8")
        if url.path == "/health":
            return self.send_json(200, self.service.health())
        if url.path == "/tasks":
            return self.send_json(200, self.service.tasks())
        if url.path == "/model.pt2":
            params = parse_qs(url.query)
            names = [n for value in params.get("tasks", []) for n in value.split(",") if n]
            data, name = self.service.model_file(names)
            return self.send(200, data, "application/octet-stream",
                             {"Content-Disposition": f'attachment; filename="{name}"'})
        if url.path == "/query":
            raise ApiError(405, "POST /query with a JSON body {\"tasks\": [...]}")
        raise ApiError(404, f"no such resource {url.path}; see GET /")

    def post(self):
        path = urlsplit(self.path).path
        if path != "/query":
            raise ApiError(404 if path not in ("/", "/health", "/tasks", "/model.pt2") else 405,
                           f"POST {path} is not part of the API; POST /query with a JSON body")
        self.send_json(200, self.service.query(self.json_body()))

    def other_method(self):
        raise ApiError(405, f"{self.command} is not part of the API (GET, and POST /query)")

    def json_body(self) -> dict:
        # A JSON content type keeps other web sites' pages from posting here (it needs a CORS
        # preflight, which this server never grants).
        if self.headers.get_content_type() != "application/json":
            raise ApiError(415, "send the query as JSON (Content-Type: application/json)")
        length = self.headers.get("Content-Length")
        if length is None:
            raise ApiError(411, "a POST needs a Content-Length header")
        try:
            length = int(length)
        except ValueError:
            raise ApiError(400, f"bad Content-Length {length!r}") from None
        if length < 0 or length > MAX_BODY:
            raise ApiError(413, f"request body of {length} bytes; at most {MAX_BODY} are accepted")
        data = self.rfile.read(length)
        self.body_read = True
        try:
            body = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ApiError(400, f"malformed JSON body: {exc}") from None
        if not isinstance(body, dict):
            raise ApiError(400, 'the body must be a JSON object, e.g. {"tasks": ["disks", "rings"]}')
        return body

    def answer(self, route) -> None:
        """Run a route; refusals become JSON errors, anything unforeseen a 500 (and a traceback
        on the server's stderr), so no request stops the server."""
        self.body_read = False
        try:
            with self.server.request_running():
                route()
        except ApiError as exc:
            if self.command != "GET" and not self.body_read or self.server.stopping:
                self.close_connection = True  # an unread body would be taken for the next request
            self.send_json(exc.status, {"error": exc.message})
        except (ConnectionError, TimeoutError):
            self.close_connection = True
        except Exception as exc:  # noqa: BLE001 - the server must outlive any one request
            traceback.print_exc(file=sys.stderr)
            self.close_connection = True
            self.send_json(500, {"error": f"internal error: {type(exc).__name__}: {exc}"})

    def send_json(self, status: int, payload: dict) -> None:
        self.send(status, (json.dumps(payload) + "\n").encode(), "application/json")

    def send(self, status: int, data: bytes, content_type: str, headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")  # a retrained expert changes the answers
        if self.close_connection:
            self.send_header("Connection", "close")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def log_request(self, code="-", size="-") -> None:
        # Quiet on success (hundreds of queries a second would flood the terminal); refusals logged.
        if isinstance(code, int) and code >= 400 or str(code).startswith(("4", "5")):
            super().log_request(code, size)


class Server(ThreadingHTTPServer):
    """Threads per connection. A stop waits for the requests being answered (not for idle
    keep-alive connections, whose threads are daemons): ending the process under a running
    evaluation or export would abort it."""
    daemon_threads = True

    def __init__(self, service: QueryService, host: str = "127.0.0.1", port: int = 0):
        self.service = service
        self.running, self.stopping, self.idle = 0, False, threading.Condition()
        super().__init__((host, port), Handler)

    @contextlib.contextmanager
    def request_running(self):
        with self.idle:
            if self.stopping:
                raise ApiError(503, "the server is stopping")
            self.running += 1
        try:
            yield
        finally:
            with self.idle:
                self.running -= 1
                self.idle.notify_all()

    def finish_requests(self, timeout: float = 120.0) -> bool:
        """Refuse new requests and wait for those running; False if some still run at `timeout`."""
        with self.idle:
            self.stopping = True
            return self.idle.wait_for(lambda: self.running == 0, timeout)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{'[' + host + ']' if ':' in host else host}:{port}/"


def serve(service: QueryService, host: str = "127.0.0.1", port: int = 8000, announce=print) -> None:
    """Serve until Ctrl-C or SIGTERM, then close the socket and return."""
    try:
        server = Server(service, host, port)
    except OSError as exc:
        raise PoEError(f"cannot listen on {host}:{port}: {exc.strerror}") from None

    def stop(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        announce(f"PoE query server: {service.profile.title}, pool {service.pool.root}, "
                 f"{len(service.pool.experts_available())} experts; "
                 + ("evaluates on the test data when asked" if service.test is not None
                    else f"no evaluation ({service.no_test_reason})"))
        if not is_loopback(host):
            announce(f"warning: listening on {host}: anyone who reaches it can query the pool (no authentication)")
        announce(f"serving on {server.url} (Ctrl-C stops)", flush=True)
        server.serve_forever()
    except KeyboardInterrupt:
        try:
            if server.running:
                announce(f"stopping: finishing {server.running} running request(s) (Ctrl-C again: stop now)",
                         flush=True)
            server.finish_requests()
        except KeyboardInterrupt:
            pass
        announce("stopped", flush=True)
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.server_close()


def is_loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve anywhere
        return False
