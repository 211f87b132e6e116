"""Structured fuzzing of objects: what an object *says* is mutated, not only its bytes.

Small valid objects (programs/asm/*.d1s assembled, and small .d1k programs compiled, for a 2x2
or 4x4 mesh) have their META and MACH JSON rewritten (tensor names, dtypes, roles, shapes,
pieces and strides; META fields of wrong types; symbols, data records, block sizes; machine
parameters) and are repacked with `d1isa.objfile.pack_sections`, which recomputes the CRC.
Each is then given to `d1 run` (with --stats, --regions and --json), `d1 disasm` and
`d1 debug --batch -ex run`, and one in four to `d1 run` for a machine that changes code
generation (so the object is rebuilt from the source it embeds), in-process in one worker
(tests/fuzzkit.py). Every outcome must be exit status 0, 1 or 2 with no traceback and no
internal error, no file may appear outside the output directory, and the worker's peak memory
stays under 2 GB. A failure lists the base object and its mutations; a worker that dies (a
native crash) names the command and holds the object, base64-encoded.

D1_FUZZ_SEED=N (or `random`) picks other examples (default 0: the same ones every run);
D1_FUZZ_SECONDS bounds the campaign (default fuzzkit.FUZZ_SECONDS).
"""

from __future__ import annotations

import base64
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if __name__ == "__main__":
    sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import pytest  # noqa: E402
from fuzzkit import (  # noqa: E402
    attempt,
    campaign_args,
    files_outside,
    invoke,
    report,
    run_campaign,
    run_worker,
    summarize,
    warm_up,
)
from hostile import make_cases  # noqa: E402

PEAK_RSS = 2 << 30
REBUILD = ["run", "obj.d1o", "--mesh", "2x2", "--set", "sram_bytes=655360", "--out-dir", "out"]
TINY_DSL = ("input x: f32[8, 16]\ninput w: f32[16, 8]\nh = relu(x @ w)\ns = sum(h, axis=1)\n"
            "output h, s\n")


def test_mutated_objects_never_crash_hang_or_write_elsewhere():
    seconds, args = campaign_args()
    res = run_worker(Path(__file__), args,
                     timeout=seconds + 120)
    assert res.returncode == 0, res.log[-4000:]
    assert not res.failures, json.dumps(res.failures[:5], indent=1)
    s = res.summary
    # the campaign did real work: many objects, some refused, some run to the end
    assert s["examples"] >= 100, s
    assert s["status"].get("2", 0) >= 20 and s["status"].get("0", 0) >= 20, s
    assert res.peak_rss_bytes < PEAK_RSS, f"worker peak RSS {res.peak_rss_bytes / 2**30:.2f} GiB"


def test_a_campaign_runs_the_emulator_once_before_it_times_a_command(monkeypatch):
    """The first `d1 run` in a worker compiles the emulator's loop (over a minute on an empty
    Numba cache and a loaded host): a DSL campaign does it before its clock starts."""
    import fuzzkit

    calls = []
    monkeypatch.setattr(fuzzkit, "invoke",
                        lambda args, cwd: calls.append(args) or fuzzkit.Outcome(0, ""))
    monkeypatch.setattr(fuzzkit, "run_campaign",
                        lambda example, seed, deadline, batch=20: calls.append("campaign"))
    monkeypatch.setattr(fuzzkit, "summarize", lambda **fields: None)
    fuzzkit.dsl_campaign("shapes", None, [], 0, 0.0)
    assert calls[0][:2] == ["run", "warm.d1k"] and calls[1:] == ["campaign"]


def test_the_harness_sees_an_internal_error_a_worker_crash_and_its_memory(tmp_path,
                                                                          monkeypatch):
    """What the fuzz tests rely on: an exception inside a command is a crash, a worker that
    dies says what it was running, and the peak memory is the worker's own."""
    import d1isa.disasm

    (tmp_path / "v.d1o").write_bytes(make_cases.base_object())
    assert not invoke(["disasm", "v.d1o"], tmp_path).crashed

    def broken(*args, **kwargs):
        raise ValueError("a bug")
    monkeypatch.setattr(d1isa.disasm, "disassemble", broken)
    res = invoke(["disasm", "v.d1o"], tmp_path)
    assert res.crashed and res.status == 3 and "ValueError: a bug" in res.output

    script = tmp_path / "worker.py"
    script.write_text(
        "import os, sys\n"
        "sys.path.insert(0, 'tests')\n"
        "from fuzzkit import attempt, summarize\n"
        "block = bytearray(300 << 20)\n"
        "summarize(examples=1)\n"
        "attempt(args=['run', 'x.d1o'])\n"
        "if sys.argv[2] == 'abort':\n"
        "    os.abort()\n")
    ok = run_worker(script, ["fine"], timeout=60)
    assert ok.returncode == 0 and ok.summary == {"examples": 1}
    assert ok.peak_rss_bytes > 300 << 20
    dead = run_worker(script, ["abort"], timeout=60)
    assert dead.returncode != 0
    assert 'the worker was running: {"args": ["run", "x.d1o"]}' in dead.log


# ---- the worker ---------------------------------------------------------------------------------

def bases() -> list[tuple[str, bytes]]:
    """(name, bytes) of the valid objects the mutations start from."""
    from compiler.pipeline import compile_text
    from d1isa.asm import assemble
    from d1isa.machine import load_machine

    m2, m4 = load_machine(mesh="2x2"), load_machine(mesh="4x4")
    out = []
    for name in ("vadd", "token_ring", "row_broadcast", "trap", "matmul8"):
        path = f"programs/asm/{name}.d1s"
        out.append((name, assemble((ROOT / path).read_text(), path, m2).to_bytes()))
    out.append(("tiny.d1k", compile_text(TINY_DSL, m2, "tiny.d1k").obj.to_bytes()))
    softmax = "programs/softmax.d1k"
    out.append(("softmax", compile_text((ROOT / softmax).read_text(), m4,
                                        softmax).obj.to_bytes()))
    return out


def strategies():
    from hypothesis import strategies as st

    from d1isa.machine import PARAMS
    from d1isa.objfile import META_FIELDS

    ints = st.sampled_from([0, 1, -1, 2, 3, 4, 7, 8, 15, 16, 63, 64, 65, 255, 256, 512, 1024,
                            4096, 65536, 1 << 20, 1310720, 1 << 30, (1 << 31) - 1, 1 << 31,
                            1 << 32, 1 << 40, 1 << 53, 1 << 62, (1 << 63) - 1, 1 << 63, 1 << 64,
                            10 ** 30, -(1 << 31), -(1 << 63)]) | st.integers(-8, 5000)
    floats = st.sampled_from([0.5, 4.0, 1e20, -1e20, math.nan, math.inf, -math.inf, -0.0,
                              1e-300, 2.0 ** 63])
    names = st.sampled_from(["../../x", "/abs/path", "a/b", "x\x00y", "c" * 300, "", " ",
                             "é", "a b", "..", ".", "con", "x" * 128, "x" * 129, "1x", "a",
                             "c", "count", "h", "s", "x", "w", "nul\x00"]) \
        | st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True) | st.text(max_size=12)
    scalars = st.none() | st.booleans() | ints | floats | names
    json_values = st.recursive(scalars, lambda kids: st.lists(kids, max_size=4)
                               | st.dictionaries(names, kids, max_size=3), max_leaves=10)
    int_lists = st.lists(ints, max_size=5) | st.lists(st.integers(0, 300), min_size=1,
                                                      max_size=3)
    meta_keys = st.sampled_from([*META_FIELDS, "unknown_key"])
    mach_keys = st.sampled_from([p.key for p in PARAMS] + ["warp_drive"])
    return st, dict(ints=ints, floats=floats, names=names, json=json_values,
                    int_lists=int_lists, meta_keys=meta_keys, mach_keys=mach_keys)


def draw_mutation(data, st, v, meta: dict, mach: dict) -> str:
    """Apply one drawn mutation to META / MACH in place; a short description of it."""
    kind = data.draw(st.sampled_from(
        ["tensor", "tensor", "tensor", "piece", "piece", "piece", "pieces", "meta", "meta",
         "outputs", "top", "record", "mach", "mach", "mach", "drop", "regions", "options",
         "source", "source"]))
    extra = meta.get("meta") if isinstance(meta.get("meta"), dict) else {}
    if kind == "regions":
        region = st.fixed_dictionaries({"op": v["names"], "name": v["names"],
                                        "line": v["ints"], "col": v["ints"]})
        extra["regions"] = value = data.draw(st.lists(region, max_size=3))
        return f"meta regions = {value!r}"
    if kind == "options":
        opt = st.sampled_from(["matmul", "double_buffer", "preskew", "reach", "verify",
                               "unknown"])
        extra["options"] = value = data.draw(st.dictionaries(
            opt, st.sampled_from(["summa", "naive", True, False]) | v["ints"] | v["json"],
            max_size=3))
        return f"meta options = {value!r}"
    if kind == "source":
        sources = meta.get("sources") if isinstance(meta.get("sources"), dict) else {}
        texts = sorted(k for k, t in sources.items() if isinstance(t, str))
        key = data.draw(st.sampled_from(["text", "text", "producer", "source", "files"]))
        if key == "text" and texts:
            name = data.draw(st.sampled_from(texts))
            text = sources[name]
            cut = data.draw(st.integers(0, len(text)))
            how = data.draw(st.sampled_from(["truncate", "repeat line", "insert", "empty"]))
            if how == "truncate":
                sources[name] = text[:cut]
            elif how == "repeat line":
                start = text.rfind("\n", 0, cut) + 1
                end = text.find("\n", cut)
                line = text[start:end if end >= 0 else len(text)]
                sources[name] = text[:start] + line + "\n" + text[start:]
            elif how == "insert":
                sources[name] = text[:cut] + data.draw(v["names"]) + text[cut:]
            else:
                sources[name] = ""
            return f"source {name!r}: {how} at {cut}"
        if key == "producer":
            extra["producer"] = value = data.draw(st.sampled_from(["d1 compile", "d1 asm"])
                                                  | v["json"])
            return f"meta producer = {value!r}"
        if key == "source":
            extra["source"] = value = data.draw(st.sampled_from(sorted(sources) or ["x"])
                                                | v["names"])
            return f"meta source = {value!r}"
        meta["files"] = value = data.draw(st.lists(st.sampled_from(sorted(sources) or ["x"])
                                                   | v["names"], max_size=3))
        return f"META files = {value!r}"
    tensors = meta.get("tensors") if isinstance(meta.get("tensors"), list) else []
    if kind in ("tensor", "piece", "pieces", "outputs") and tensors:
        t = tensors[data.draw(st.integers(0, len(tensors) - 1))]
        if not isinstance(t, dict):
            return "tensor: not a table"
        if kind == "tensor":
            key = data.draw(st.sampled_from(["name", "dtype", "role", "shape", "shape",
                                             "pieces"]))
            value = data.draw({
                "name": v["names"] | st.sampled_from([x.get("name") for x in tensors
                                                      if isinstance(x, dict)]),
                "dtype": st.sampled_from(["f32", "bf16", "i32", "f64", "", "F32"]) | v["json"],
                "role": st.sampled_from(["input", "output", "internal", "weights"])
                | v["json"],
                "shape": v["int_lists"] | v["json"],
                "pieces": st.just([]) | v["json"],
            }[key])
            t[key] = value
            return f"tensor {t.get('name')!r}: {key} = {value!r}"
        pieces = t.get("pieces") if isinstance(t.get("pieces"), list) else []
        if kind == "piece" and pieces:
            p = pieces[data.draw(st.integers(0, len(pieces) - 1))]
            if not isinstance(p, list) or len(p) != 5:
                return "piece: not a record"
            i = data.draw(st.integers(0, 4))
            p[i] = data.draw(v["ints"] if i < 2 else v["int_lists"] | v["json"])
            return f"tensor {t.get('name')!r} piece field {i} = {p[i]!r}"
        if kind == "pieces":
            how = data.draw(st.sampled_from(["empty", "double", "stride0", "one"]))
            if how == "empty":
                t["pieces"] = []
            elif how == "double":
                t["pieces"] = pieces + pieces
            elif pieces and isinstance(pieces[0], list) and len(pieces[0]) == 5:
                p = list(pieces[0])
                if how == "stride0":
                    n = data.draw(v["ints"])
                    t["shape"], t["pieces"] = [n], [[p[0], p[1], [0], [n], [0]]]
                else:
                    t["pieces"] = [p]
            return f"tensor {t.get('name')!r} pieces: {how}"
        if kind == "outputs":
            value = data.draw(st.lists(st.sampled_from([x.get("name") for x in tensors
                                                        if isinstance(x, dict)]) | v["names"],
                                       max_size=3))
            key = data.draw(st.sampled_from(["outputs", "inputs", "scalar_outputs"]))
            if isinstance(meta.get("meta"), dict):
                meta["meta"][key] = value
            return f"meta {key} = {value!r}"
    if kind == "meta" and isinstance(meta.get("meta"), dict):
        key = data.draw(v["meta_keys"])
        meta["meta"][key] = value = data.draw(v["json"])
        return f"meta {key} = {value!r}"
    if kind == "top":
        key = data.draw(st.sampled_from(["blocks", "data", "symbols", "files", "sources",
                                         "meta", "tensors"]))
        meta[key] = value = data.draw(v["json"])
        return f"META {key} = {value!r}"
    if kind == "record":
        key = data.draw(st.sampled_from(["blocks", "data", "symbols"]))
        items = meta.get(key)
        if isinstance(items, list) and items:
            i = data.draw(st.integers(0, len(items) - 1))
            if key == "blocks":
                items[i] = data.draw(v["ints"])
            elif isinstance(items[i], list) and items[i]:
                j = data.draw(st.integers(0, len(items[i]) - 1))
                items[i][j] = data.draw(v["ints"] | v["names"] | v["json"])
            return f"META {key}[{i}] changed"
        return f"META {key}: nothing to change"
    if kind == "mach":
        key = data.draw(v["mach_keys"])
        mach[key] = value = data.draw(v["ints"] | v["floats"] | v["json"])
        return f"MACH {key} = {value!r}"
    if kind == "drop":
        doc = data.draw(st.sampled_from(["meta", "mach"]))
        target = meta if doc == "meta" else mach
        if target:
            key = data.draw(st.sampled_from(sorted(target)))
            del target[key]
            return f"{doc.upper()} without {key}"
    return "no change"


def worker(seed: int, seconds: float) -> None:
    from d1isa.objfile import pack_sections

    objects = bases()
    st, v = strategies()
    warm_up()
    deadline = time.monotonic() + seconds
    statuses: dict[int, int] = {}
    count = [0]
    commands = [["run", "obj.d1o", "--out-dir", "out", "--json", "out/run.json", "--stats",
                 "--regions"],
                ["disasm", "obj.d1o"],
                ["debug", "obj.d1o", "--batch", "-ex", "run", "-ex", "where"]]

    def example(data) -> None:
        name, raw = data.draw(st.sampled_from(objects))
        sections = make_cases.split_sections(raw)
        meta = json.loads(dict(sections)[b"META"])
        mach = json.loads(dict(sections)[b"MACH"])
        what = [draw_mutation(data, st, v, meta, mach)
                for _ in range(data.draw(st.integers(1, 3)))]
        new = {b"META": json.dumps(meta).encode(), b"MACH": json.dumps(mach).encode()}
        body = pack_sections([(tag, new.get(tag, payload)) for tag, payload in sections])
        count[0] += 1
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            (root / "obj.d1o").write_bytes(body)
            # now and then, a machine that changes code generation: the object is rebuilt
            # from the source it embeds
            rebuild = data.draw(st.sampled_from([False, False, False, True]))
            for args in commands + ([REBUILD] if rebuild else []):
                attempt(base=name, mutations=what, command=args,
                        object=base64.b64encode(body).decode())
                t0 = time.monotonic()
                res = invoke(args, root)
                spent = time.monotonic() - t0
                statuses[res.status] = statuses.get(res.status, 0) + 1
                stray = files_outside(root, "out") - {"obj.d1o"}
                if res.crashed or stray or spent > 30:
                    report("object", base=name, mutations=what, command=args[0],
                           status=res.status, seconds=round(spent, 1), stray=sorted(stray),
                           output=res.output[-3000:])

    run_campaign(example, seed, deadline)
    summarize(examples=count[0], status={str(k): n for k, n in sorted(statuses.items())})


if __name__ == "__main__" and sys.argv[1:2] == ["--worker"]:
    worker(int(sys.argv[2]) if sys.argv[2] != "random" else int.from_bytes(os.urandom(4)),
           float(sys.argv[3]))
elif __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
