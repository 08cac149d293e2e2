"""The annotators' web app (FastAPI, served by uvicorn): server-rendered pages, a little plain JS
for the keyboard flow, JSON endpoints that validate every answer before one SQLite transaction.

Routes: ``/`` (enter a name), ``/annotate?annotator=NAME`` (the annotator's next item; resumes
where they left off), ``/admin`` (progress per annotator and per method), ``/files/images/...``
(study pictures only), ``GET /api/next``, ``GET /api/progress``, ``POST /api/annotators``,
``POST /api/answers``, ``POST /api/undo``. With a token every request needs it (``?token=``, an
``Authorization: Bearer`` header, or the cookie a valid ``?token=`` sets).
"""
import contextlib
import hmac
import html
import os
import re
from typing import List, Optional

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse
from pydantic import BaseModel, StrictBool, StrictInt

from . import store
from .store import IMAGES_DIR, StudyError

ANNOTATOR_NAME = re.compile(r"^[\w .\-]{1,64}$")
COOKIE = "manual_eval_token"


class SegmentAnswer(BaseModel):
    segment_id: StrictInt
    meaningful: StrictBool


class PanelAnswer(BaseModel):
    panel_id: StrictInt
    splits: StrictBool
    num_parts: StrictInt
    segments: List[SegmentAnswer]


class Answer(BaseModel):
    annotator: str
    item_id: StrictInt
    panels: List[PanelAnswer]


class AnnotatorIn(BaseModel):
    annotator: str


STYLE = """body{font-family:sans-serif;margin:16px;background:#fafafa}
.bar{background:#ddd;height:12px;width:100%;max-width:900px}.bar div{background:#3a7;height:12px}
.panel{display:inline-block;vertical-align:top;margin:8px;padding:8px;background:#fff;border:1px solid #ccc}
.q{padding:3px 6px;margin:2px 0;border-left:4px solid transparent}.q.cur{border-color:#e80;background:#fff3d6}
.q .v{font-weight:bold;margin-left:8px}button{margin:0 2px}.help{color:#555;font-size:90%}
table{border-collapse:collapse}td,th{border:1px solid #bbb;padding:3px 8px}#err{color:#b00}"""

SCRIPT = r"""
(function(){
const form=document.getElementById('item'); if(!form) return;
const qs=[...document.querySelectorAll('.q')]; let cur=0;
function show(){qs.forEach((q,i)=>q.classList.toggle('cur',i===cur));
  if(qs[cur]) qs[cur].scrollIntoView({block:'nearest'});}
function set(q,v){q.dataset.value=v; q.querySelector('.v').textContent=
  q.dataset.kind==='yn'?(v==='1'?'yes':'no'):v;}
function next(){if(cur<qs.length-1){cur++;} show();}
function allDone(){return qs.every(q=>q.dataset.value!==undefined);}
async function post(url,body){const r=await fetch(url,{method:'POST',headers:{'Content-Type':'application/json'},
  body:JSON.stringify(body)}); if(!r.ok){const t=await r.json().catch(()=>({detail:r.statusText}));
  document.getElementById('err').textContent=JSON.stringify(t.detail); return false;} return true;}
async function submit(){if(!allDone()){document.getElementById('err').textContent='answer every question first';
  cur=qs.findIndex(q=>q.dataset.value===undefined); show(); return;}
  const panels=[...document.querySelectorAll('.panel')].map(p=>({panel_id:+p.dataset.panel,
    splits:p.querySelector('[data-kind=yn][data-field=splits]').dataset.value==='1',
    num_parts:+p.querySelector('[data-kind=count]').dataset.value,
    segments:[...p.querySelectorAll('[data-field=meaningful]')].map(q=>({segment_id:+q.dataset.segment,
      meaningful:q.dataset.value==='1'}))}));
  if(await post('api/answers',{annotator:form.dataset.annotator,item_id:+form.dataset.item,panels})) location.reload();}
window.undoLast=async function(){if(await post('api/undo',{annotator:document.body.dataset.annotator})) location.reload();};
qs.forEach((q,i)=>q.addEventListener('click',e=>{const b=e.target.closest('button'); cur=i;
  if(b){set(q,b.dataset.v); next();} show();}));
document.getElementById('save').addEventListener('click',submit);
document.addEventListener('keydown',e=>{const q=qs[cur]; if(e.ctrlKey||e.metaKey||e.altKey) return;
  if(e.key==='Enter'){e.preventDefault(); submit(); return;}
  if(e.key==='Backspace'){e.preventDefault(); if(cur>0) cur--; show(); return;}
  if(e.key==='u'){e.preventDefault(); window.undoLast(); return;}
  if(!q) return;
  if(q.dataset.kind==='yn'&&(e.key==='y'||e.key==='n')){set(q,e.key==='y'?'1':'0'); next();}
  else if(q.dataset.kind==='count'&&/^[0-9]$/.test(e.key)){const max=+q.dataset.max;
    let v=(q.dataset.typing==='1'?q.dataset.value:'')+e.key; if(+v>max) v=e.key; if(+v>max) return;
    set(q,String(+v)); q.dataset.typing='1'; if(+v*10>max){q.dataset.typing='0'; next();}}
});
show();
})();
"""


def _page(title: str, body: str, annotator: str = "") -> HTMLResponse:
    return HTMLResponse(f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
                        f"<style>{STYLE}</style></head><body data-annotator='{html.escape(annotator)}'>{body}"
                        f"<script>{SCRIPT}</script></body></html>")


def _yn(field: str, text: str, extra: str = "") -> str:
    return (f"<div class='q' data-kind='yn' data-field='{field}' {extra}>{text} "
            "<button type='button' data-v='1'>yes (y)</button><button type='button' data-v='0'>no (n)</button>"
            "<span class='v'></span></div>")


def _item_html(view: dict, annotator: str, prog: dict) -> str:
    pct = 100.0 * prog["done"] / max(prog["total"], 1)
    out = [f"<div>Annotator <b>{html.escape(annotator)}</b> &middot; item {prog['done'] + 1} of {prog['total']}"
           f" <button type='button' onclick='undoLast()'>undo last (u)</button></div>",
           f"<div class='bar'><div style='width:{pct:.1f}%'></div></div>",
           f"<h3>Object: {html.escape(view['class_name'])}</h3>",
           f"<img id='context' src='files/{view['context']}' alt='object outlined'>",
           "<p class='help'>y / n: yes / no &middot; 0-9: a count &middot; Backspace: previous question "
           "&middot; Enter: save and go on &middot; u: undo the last saved item</p>",
           f"<div id='item' data-item='{view['item_id']}' data-position='{view['position']}' "
           f"data-annotator='{html.escape(annotator)}'>"]
    for p in view["panels"]:
        letter = chr(ord("A") + p["slot"])
        out.append(f"<div class='panel' data-panel='{p['panel_id']}'><h4>Segmentation {letter}</h4>"
                   f"<img src='files/{p['image']}' alt='segmentation {letter}'>")
        for s in p["segments"]:
            out.append(_yn("meaningful", f"Segment {s['number']}: a meaningful part of the object?",
                           f"data-segment='{s['segment_id']}'"))
        out.append(f"<div class='q' data-kind='count' data-max='{p['num_segments']}'>How many distinct meaningful "
                   f"parts does it show? (0-{p['num_segments']}) <span class='v'></span></div>")
        out.append(_yn("splits", "Does this split the object into parts at all?"))
        out.append("</div>")
    out.append("</div><p><button type='button' id='save'>save and next (Enter)</button> <span id='err'></span></p>")
    return "".join(out)


def create_app(study_dir: str, token: Optional[str] = None) -> FastAPI:
    """The app serving the study in ``study_dir``; with ``token``, every request must carry it.
    Raises :class:`~part_distillation.manual_eval.store.StudyError` if the folder is no study."""
    study_dir = os.path.realpath(study_dir)
    store.connect(study_dir).close()
    images_root = os.path.join(study_dir, IMAGES_DIR)
    app = FastAPI(title="part-distillation manual evaluation", docs_url=None, redoc_url=None, openapi_url=None)

    @app.middleware("http")
    async def check_token(request: Request, call_next):
        if token is None:
            return await call_next(request)
        given = [request.query_params.get("token"), request.cookies.get(COOKIE)]
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            given.append(auth[7:])
        if not any(g is not None and hmac.compare_digest(g.encode(), token.encode()) for g in given):
            return JSONResponse({"detail": "missing or wrong token"}, status_code=401)
        response = await call_next(request)
        if request.query_params.get("token"):
            response.set_cookie(COOKIE, token, httponly=True, samesite="strict")
        return response

    def db():  # a connection closed on leaving the ``with`` block
        return contextlib.closing(store.connect(study_dir))

    def known(conn, name: str) -> int:
        aid = store.annotator_id(conn, name)
        if aid is None:
            raise HTTPException(404, f"unknown annotator {name!r} (enter a name on the start page)")
        return aid

    @app.get("/", response_class=HTMLResponse)
    def start():
        body = ("<h2>Part segmentation study</h2><p>For each object you see several segmentations in random "
                "order. Judge each segment and each segmentation; nothing tells which method made it.</p>"
                "<form id='start'><label>Your name <input id='name' name='annotator' autofocus></label> "
                "<button>start</button> <span id='err'></span></form><script>"
                "document.getElementById('start').addEventListener('submit',async e=>{e.preventDefault();"
                "const n=document.getElementById('name').value.trim();const r=await fetch('api/annotators',"
                "{method:'POST',headers:{'Content-Type':'application/json'},body:JSON.stringify({annotator:n})});"
                "if(r.ok) location.href='annotate?annotator='+encodeURIComponent(n); else "
                "document.getElementById('err').textContent=(await r.json()).detail;});</script>")
        return _page("manual evaluation", body)

    @app.post("/api/annotators")
    def add_annotator(a: AnnotatorIn):
        if not ANNOTATOR_NAME.match(a.annotator):
            raise HTTPException(400, "a name is 1-64 letters, digits, spaces, '.', '_' or '-'")
        with db() as conn:
            return {"annotator": a.annotator, "id": store.annotator_id(conn, a.annotator, create=True)}

    @app.get("/annotate", response_class=HTMLResponse)
    def annotate(annotator: str = ""):
        with db() as conn:
            aid = store.annotator_id(conn, annotator) if annotator else None
            if aid is None:
                return RedirectResponse("./", status_code=303)
            prog, item = store.progress(conn, aid), store.next_item(conn, aid)
            if item is None:
                return _page("done", f"<h3>All {prog['total']} items saved, thank you {html.escape(annotator)}.</h3>"
                             "<button type='button' onclick='undoLast()'>undo last (u)</button><span id='err'></span>"
                             "<script>document.addEventListener('keydown',e=>{if(e.key==='u') undoLast();});</script>",
                             annotator)
            return _page(f"item {prog['done'] + 1}", _item_html(store.item_view(conn, item), annotator, prog), annotator)

    @app.get("/api/next")
    def api_next(annotator: str):
        with db() as conn:
            aid = known(conn, annotator)
            item = store.next_item(conn, aid)
            return {"item": None if item is None else store.item_view(conn, item), **store.progress(conn, aid)}

    @app.post("/api/answers")
    def api_answer(a: Answer):
        with db() as conn:
            aid = known(conn, a.annotator)
            try:
                sub = store.save_answer(conn, aid, a.item_id, [p.model_dump() for p in a.panels])
            except StudyError as e:
                code = 404 if str(e).startswith("no item") else 409 if "already saved" in str(e) else 400
                raise HTTPException(code, str(e)) from None
            return {"submission": sub, **store.progress(conn, aid)}

    @app.post("/api/undo")
    def api_undo(a: AnnotatorIn):
        with db() as conn:
            item = store.undo_last(conn, known(conn, a.annotator))
            if item is None:
                raise HTTPException(409, "nothing to undo")
            return {"undone_item": item}

    def progress_table(conn) -> dict:
        total = conn.execute("SELECT COUNT(*) FROM items").fetchone()[0]
        people = [dict(r) for r in conn.execute(
            "SELECT a.name, COUNT(s.id) AS done, MAX(s.created) AS last FROM annotators a LEFT JOIN submissions s "
            "ON s.annotator_id = a.id AND s.undone IS NULL GROUP BY a.id ORDER BY a.name")]
        methods = [dict(r) for r in conn.execute(
            "SELECT m.name, COUNT(pa.panel_id) AS panels_answered FROM methods m LEFT JOIN panels p ON p.method_id = m.id "
            "LEFT JOIN panel_answers pa ON pa.panel_id = p.id AND pa.submission_id IN "
            "(SELECT id FROM submissions WHERE undone IS NULL) GROUP BY m.id ORDER BY m.name")]
        multi = conn.execute("SELECT COUNT(*) FROM (SELECT item_id FROM submissions WHERE undone IS NULL "
                             "GROUP BY item_id HAVING COUNT(DISTINCT annotator_id) >= 2)").fetchone()[0]
        return {"items": total, "annotators": people, "methods": methods, "items_with_2_annotators": multi}

    @app.get("/api/progress")
    def api_progress():
        with db() as conn:
            return progress_table(conn)

    @app.get("/admin", response_class=HTMLResponse)
    def admin():
        with db() as conn:
            t = progress_table(conn)
        rows = "".join(f"<tr><td>{html.escape(p['name'])}</td><td>{p['done']} / {t['items']}</td></tr>"
                       for p in t["annotators"])
        mrows = "".join(f"<tr><td>{html.escape(m['name'])}</td><td>{m['panels_answered']}</td></tr>"
                        for m in t["methods"])
        return _page("admin", f"<h2>Study progress</h2><p>{t['items']} items; {t['items_with_2_annotators']} with "
                     f"two or more annotators.</p><h3>Annotators</h3><table><tr><th>annotator</th><th>items saved"
                     f"</th></tr>{rows}</table><h3>Methods</h3><table><tr><th>method</th><th>panels answered</th>"
                     f"</tr>{mrows}</table>")

    @app.get("/files/{path:path}")
    def files(path: str):
        full = os.path.realpath(os.path.join(study_dir, path))
        if os.path.isabs(path) or os.path.commonpath([full, images_root]) != images_root or not os.path.isfile(full):
            raise HTTPException(404, "no such study picture")
        return FileResponse(full)

    return app


def serve(study_dir: str, host: str = "127.0.0.1", port: int = 8000, token: Optional[str] = None) -> None:
    """Run :func:`create_app` with uvicorn until interrupted (binds ``host``, loopback by default)."""
    import logging

    import uvicorn

    if host not in ("127.0.0.1", "localhost", "::1") and token is None:
        logging.getLogger(__name__).warning("serving on %s without --token: anyone who reaches it can answer", host)
    uvicorn.run(create_app(study_dir, token), host=host, port=port, log_level="info")
