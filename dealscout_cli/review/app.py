"""The review web app: a raw ASGI application over one database, rendered with Jinja2.

    GET  /                       the grid (attention, state, q, sort, desc, page)
    GET  /item/{id}              one item: photos, the editable listing, history, calls
    POST /item/{id}/save         the seller's edit: a new revision
    POST /item/{id}/approve      .../reject, .../undecide: the seller's decision
    POST /item/{id}/ask          ask again with a note: back in the queue for the next snap
    GET  /photo/{id}/thumb       a photo of an item (.../large for the item page)
    GET  /export, /export/file   approved listings in any export format
    GET  /progress               what `status` shows, live; POST /snap runs the queue
    GET  /groups                 the groups as rows of thumbnails, with why each starts
    POST /groups/merge           merge a group with the next (first, second: item ids)
    POST /groups/split           split a group so a new one starts at a photo (photo: its id)
    GET  /static/{name}          the app's own script and style

Every request needs the token (`http.py` says why and how); every page escapes what it
shows (Jinja2 autoescape: a model's title or a file name is text, never markup).
"""

from __future__ import annotations

import asyncio
import io
import os
import re
import secrets
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import jinja2

from dealscout_cli.config import api_key_from_env
from dealscout_cli.errors import BadPhoto, DealscoutError, UsageError
from dealscout_cli.export import ExportFormat
from dealscout_cli.models import price_decimal
from dealscout_cli.review.http import (
    TOKEN_COOKIE,
    Receive,
    Request,
    Response,
    Scope,
    Send,
    cross_site,
    host_allowed,
    read_form,
    redirect,
    same_secret,
    text,
)
from dealscout_cli.review.thumbs import Size, cache_folder, photo_jpeg
from dealscout_cli.store.reviews import GRID_STATES, Decision, GridQuery, GridSort

if TYPE_CHECKING:
    from dealscout_cli.store import Store

GROUPS_A_PAGE = 50  # a 10,000-item database is 200 pages, not one 7 MB page
EXPORT_FORMATS = tuple(ExportFormat)  # the export page's choices: every format export has
_ITEM = re.compile(r"/item/(\d{1,12})(?:/(save|approve|reject|undecide|ask))?")
_PHOTO = re.compile(r"/photo/(\d{1,12})/(thumb|large)")
_DECISIONS = {"approve": Decision.APPROVED, "reject": Decision.REJECTED, "undecide": None}
_STATIC_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}


class ReviewApp:
    """The app over one open `Store`. `port` is the one it is served on (Host and Origin
    checks); `token` is the secret in the printed URL."""

    def __init__(self, store: Store, *, port: int, token: str | None = None) -> None:
        self.store = store
        self.port = port
        self.token = token or secrets.token_urlsafe(24)
        self.csrf = secrets.token_urlsafe(24)  # this run's form secret, never in a URL
        self.thumbs = cache_folder(store.path)
        self.snap: subprocess.Popen[bytes] | None = None
        self.templates = jinja2.Environment(
            loader=jinja2.PackageLoader("dealscout_cli.review", "templates"),
            autoescape=True,  # every template, whatever its name: the text is untrusted
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.templates.globals.update(csrf=self.csrf, usd=_usd, states=GRID_STATES)
        static = resources.files("dealscout_cli.review") / "static"
        self.static = {
            entry.name: entry.read_bytes() for entry in static.iterdir() if entry.is_file()
        }

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/?token={self.token}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        request = Request.from_scope(scope)
        response = await self.guarded(request, receive)
        await response.send(send)

    async def guarded(self, request: Request, receive: Receive) -> Response:
        if not host_allowed(request, self.port):
            return text(403, "refused: this server answers on 127.0.0.1 only")
        given = request.query.get("token") or request.cookies.get(TOKEN_COOKIE, "")
        if not same_secret(given, self.token):
            return text(403, "refused: open the URL `dealscout review` printed (it has the token)")
        if request.method == "POST":
            form = await read_form(receive)
            if form is None:
                return text(413, "refused: the form is too large")
            request.form = form
            if cross_site(request, self.port) or not same_secret(form.get("csrf", ""), self.csrf):
                return text(403, "refused: a form from another page or site")
        elif request.method not in ("GET", "HEAD"):
            return text(405, "only GET and POST")
        try:
            response = await self.route(request)
        except DealscoutError as exc:
            response = self.page("error.html", status=400, message=str(exc))
        if "token" in request.query:  # the first visit: the cookie carries it from now on
            response.headers.append(
                (
                    b"set-cookie",
                    f"{TOKEN_COOKIE}={self.token}; HttpOnly; SameSite=Strict; Path=/".encode(),
                )
            )
        return response

    async def route(self, request: Request) -> Response:
        path, post = request.path, request.method == "POST"
        if path == "/" and not post:
            return self.grid_page(request)
        if match := _ITEM.fullmatch(path):
            item_id, action = int(match[1]), match[2]
            if action is None and not post:
                return self.item_page(request, item_id)
            if action is not None and post:
                return self.item_action(request, item_id, action)
        elif match := _PHOTO.fullmatch(path):
            return await self.photo(int(match[1]), Size[match[2].upper()])
        elif path.startswith("/static/") and not post:
            return self.static_file(path.removeprefix("/static/"))
        elif path == "/export" and not post:
            return self.page("export.html", formats=EXPORT_FORMATS, approved=self._approved())
        elif path == "/export/file" and not post:
            return self.export_file(request)
        elif path == "/progress" and not post:
            return self.page("progress.html", **self.progress())
        elif path == "/progress/part" and not post:
            return self.page("progress_part.html", **self.progress())
        elif path == "/snap" and post:
            return self.run_snap(request)
        elif path == "/groups" and not post:
            return self.groups_page(request)
        elif path in ("/groups/merge", "/groups/split") and post:
            return self.regroup(request, path.removeprefix("/groups/"))
        return self.page("error.html", status=404, message=f"nothing at {path}")

    # ------------------------------------------------------------ pages

    def page(self, name: str, *, status: int = 200, **values: Any) -> Response:
        html = self.templates.get_template(name).render(**values)
        return Response(status, html.encode())

    def grid_page(self, request: Request) -> Response:
        query = grid_query(request)
        started = time.perf_counter()
        page = self.store.grid(query)
        return self.page(
            "grid.html",
            page=page,
            query=query,
            here=grid_params(query),
            params=lambda **change: _params(query, **change),
            sorts=[sort.value for sort in GridSort],
            took_ms=round((time.perf_counter() - started) * 1000),
        )

    def item_page(
        self,
        request: Request,
        item_id: int,
        *,
        status: int = 200,
        errors: dict[str, str] | None = None,
        posted: dict[str, str] | None = None,
    ) -> Response:
        from dealscout_cli.costs import format_usd
        from dealscout_cli.review.forms import CONDITIONS, form_values
        from dealscout_cli.store.reviews import changes

        facts = self.store.item_facts(item_id)
        if facts is None:
            return self.page("error.html", status=404, message=f"no item with id {item_id}")
        query = grid_query(request)
        revisions = self.store.revisions(item_id)
        current = revisions[-1].fields if revisions else None
        history = [
            (
                revision,
                changes(revisions[i - 1].fields if i else None, revision.fields) if i else [],
            )
            for i, revision in enumerate(revisions)
        ]
        calls = self.store.calls_for_item(item_id)
        before, after = self.store.grid_neighbours(query, item_id)
        return self.page(
            "item.html",
            status=status,
            facts=facts,
            item_id=item_id,
            photos=self.store.photos_of(item_id),
            current=current,
            values={**(form_values(current) if current else {}), **(posted or {})},
            errors=errors or {},
            history=history,
            review=self.store.review_of(item_id),
            calls=calls,
            cost=format_usd(_total_cost(calls)),
            format_usd=format_usd,
            conditions=CONDITIONS,
            here=grid_params(query),
            before=before,
            after=after,
            flash=request.query.get("done", ""),
        )

    def item_action(self, request: Request, item_id: int, action: str) -> Response:
        from dealscout_cli.review.forms import listing_from_form

        query = grid_query(request)
        now = time.time()
        if action == "save":
            current = self.store.revisions(item_id)
            if not current:
                raise DealscoutError(f"item {item_id} has no listing to edit yet")
            parsed = listing_from_form(request.form, current[-1].fields)
            if isinstance(parsed, dict):
                return self.item_page(
                    request, item_id, status=400, errors=parsed, posted=request.form
                )
            self.store.save_seller_revision(item_id, *parsed, now=now)
            return redirect(_item_url(item_id, query, done="saved"))
        if action == "ask":
            self.store.ask_again(item_id, request.form.get("note", ""), now=now)
            return redirect(_item_url(item_id, query, done="asked"))
        _, after = self.store.grid_neighbours(query, item_id)  # before the item leaves a filter
        decision = _DECISIONS[action]
        self.store.decide(item_id, decision, now=now)
        done = decision.value if decision else "undecided"
        if request.form.get("then") == "next" and after is not None:
            return redirect(_item_url(after, query, done=f"{done}:{item_id}"))
        if request.form.get("then") == "grid":
            return redirect("/?" + grid_params(query))
        return redirect(_item_url(item_id, query, done=done))

    async def photo(self, photo_id: int, size: Size) -> Response:
        found = self.store.photo_file(photo_id)
        if found is None:
            return text(404, "no such photo")
        path, sha256 = found
        try:
            data = await asyncio.to_thread(photo_jpeg, path, sha256, size, self.thumbs)
        except BadPhoto as exc:
            return text(404, str(exc))
        return Response(200, data, "image/jpeg")

    def static_file(self, name: str) -> Response:
        data = self.static.get(name)
        suffix = Path(name).suffix
        if data is None or suffix not in _STATIC_TYPES:
            return text(404, "no such file")
        return Response(200, data, _STATIC_TYPES[suffix])

    # ------------------------------------------------------------ groups

    def groups_page(self, request: Request) -> Response:
        """Every item as a group of photos, in capture order, a page at a time: the same
        groups, rules and store functions as `dealscout group`."""
        groups = self.store.groups(every_item=True)
        pages = max(1, -(-len(groups) // GROUPS_A_PAGE))
        number = request.query.get("page", "1")
        page = min(pages, int(number)) if number.isdigit() and 0 < len(number) < 7 else 1
        start = (max(page, 1) - 1) * GROUPS_A_PAGE
        end = start + GROUPS_A_PAGE
        return self.page(
            "groups.html",
            groups=groups[start:end],
            after=groups[end] if end < len(groups) else None,  # the last one's "next"
            page=max(page, 1),
            pages=pages,
            total=len(groups),
            done=request.query.get("done", ""),
        )

    def regroup(self, request: Request, action: str) -> Response:
        now = time.time()
        if action == "merge":
            pair = [_form_id(request, "first"), _form_id(request, "second")]
            new = self.store.merge_groups(pair, now=now)
            return redirect(self._groups_url(new, f"merged into {new}"))
        first, second = self.store.split_before_photo(_form_id(request, "photo"), now=now)
        return redirect(self._groups_url(first, f"split into {first} and {second}"))

    def _groups_url(self, item_id: int, done: str) -> str:
        """The Groups page that shows this group, scrolled to it."""
        ids = [group.item_id for group in self.store.groups(every_item=True)]
        page = ids.index(item_id) // GROUPS_A_PAGE + 1 if item_id in ids else 1
        return f"/groups?{urlencode({'page': page, 'done': done})}#group-{item_id}"

    # ------------------------------------------------------------ export and progress

    def _approved(self) -> int:
        return self.store.grid(GridQuery(state=Decision.APPROVED.value, page_size=1)).total

    def export_file(self, request: Request) -> Response:
        from dealscout_cli.export import ExportOptions, export_listings

        chosen = request.query.get("format", "csv")
        fmt = ExportFormat(chosen if chosen in EXPORT_FORMATS else "csv")
        options = ExportOptions(
            photo_base_url=request.query.get("photo_base_url") or None,
            product_url=request.query.get("product_url") or None,
            include_offline=request.query.get("include_offline") == "1",
        )
        out = io.StringIO(newline="")
        export_listings(self.store.listings(approved_only=True), fmt, out, options)
        suffix = "jsonl" if fmt is ExportFormat.JSONL else "csv"
        kind = "application/x-ndjson" if suffix == "jsonl" else "text/csv"
        return Response(
            200,
            out.getvalue().encode("utf-8"),
            f"{kind}; charset=utf-8",
            [
                (
                    b"content-disposition",
                    f'attachment; filename="approved-{fmt.value}.{suffix}"'.encode(),
                )
            ],
        )

    def progress(self) -> dict[str, Any]:
        from dealscout_cli.status import status_report

        running = self.snap is not None and self.snap.poll() is None
        return {"report": status_report(self.store, now=time.time()), "snap_running": running}

    def run_snap(self, request: Request) -> Response:
        """Run `dealscout snap` on the queue (what "ask again" queued) as a process of its
        own; the progress page shows it like any other run."""
        if self.snap is None or self.snap.poll() is not None:
            command = [
                sys.executable,
                "-m",
                "dealscout_cli.cli",
                "snap",
                "--db",
                str(self.store.path),
                "--quiet",
            ]
            if request.form.get("offline") == "1" or api_key_from_env(os.environ) is None:
                command.append("--offline")  # no key: the emulator's placeholders, no cost
            log = self.store.path.with_name(self.store.path.name + "-review-snap.log")
            with log.open("ab") as out:
                self.snap = subprocess.Popen(
                    command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
                )
        return redirect("/progress")

    def close(self) -> None:
        if self.snap is not None and self.snap.poll() is None:
            self.snap.terminate()
            try:
                self.snap.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.snap.kill()


def grid_query(request: Request) -> GridQuery:
    """The grid's filters from the query string; anything unknown is the default."""
    sort = request.query.get("sort", "")
    state = request.query.get("state", "")
    page = request.query.get("page", "1")
    return GridQuery(
        attention=request.query.get("attention") == "1",
        state=state if state in GRID_STATES else None,
        text=request.query.get("q", "").strip()[:200] or None,
        sort=GridSort(sort) if sort in GridSort.__members__.values() else GridSort.ITEM,
        descending=request.query.get("desc") == "1",
        page=int(page) if page.isdigit() and len(page) < 7 else 1,
    )


def grid_params(query: GridQuery) -> str:
    """The query string that gives this grid back (without its page)."""
    return _params(query, page=None)


def _params(query: GridQuery, **change: Any) -> str:
    values: dict[str, Any] = {
        "attention": "1" if query.attention else None,
        "state": query.state,
        "q": query.text,
        "sort": query.sort.value if query.sort is not GridSort.ITEM else None,
        "desc": "1" if query.descending else None,
        "page": query.page if query.page > 1 else None,
    }
    values.update(change)
    return urlencode({key: value for key, value in values.items() if value not in (None, "")})


def _item_url(item_id: int, query: GridQuery, **extra: str) -> str:
    params = "&".join(filter(None, [grid_params(query), urlencode(extra)]))
    return f"/item/{item_id}" + (f"?{params}" if params else "")


def _form_id(request: Request, name: str) -> int:
    value = request.form.get(name, "")
    if not (value.isascii() and value.isdigit() and len(value) < 13):
        raise UsageError(f"the form's {name} is not a number: reload the Groups page")
    return int(value)


def _total_cost(calls: list[dict[str, Any]]) -> int | None:
    total = 0
    for call in calls:
        if call["input_tokens"] is not None and call["cost_micro_usd"] is None:
            return None  # a model without a price: unknown, never $0
        total += call["cost_micro_usd"] or 0
    return total


def _usd(amount: float | None, currency: str | None = None) -> str:
    if amount is None:
        return "–"
    return f"{price_decimal(amount):,.2f} {currency or ''}".strip()
