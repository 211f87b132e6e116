"""Write docs/TUTORIAL.md: run every command of the tutorial and paste in its real output.

    .venv/bin/python docs/tutorial_gen.py         rewrite docs/TUTORIAL.md and docs/img/*.png

The tutorial text lives in TEMPLATE below. A ```console block lists commands (`$ d1 ...`); the
generator runs them in order, in a scratch directory that holds a link to programs/ and an empty
docs/img/, and puts each command's output (stdout and stderr, as a terminal shows them) under
it. Figures quoted in the prose are `<<name>>` placeholders filled from the runs' own statistics
files (see `facts`), so the prose and the outputs always come from the same runs. Pictures the
commands write under docs/img/ are copied into the repository.

tests/test_tutorial.py re-runs every command and compares its output with the document, after
`normalise` masks what is measured on the host (wall times vary): any line that says "measured on
the host", and the indented lines under a heading that ends with it, keep their text up to the
first digit and the rest becomes "#". Regenerate the tutorial whenever the compiler, the emulator
or a command changes what they print.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shlex
import shutil
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "TUTORIAL.md"
IMG = ROOT / "docs" / "img"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

HOST = "measured on the host"
_FIRST_DIGIT = re.compile(r"\d")


def _mask(line: str) -> str:
    """Keep a host-measured line's label, up to its first digit; the rest becomes '#'."""
    m = _FIRST_DIGIT.search(line)
    return line if m is None else line[:m.start()].rstrip() + " #"


def normalise(text: str) -> str:
    """Mask host-measured figures (see the module docstring); strip trailing spaces."""
    out = []
    masking = False
    for line in text.splitlines():
        line = line.rstrip()
        if HOST in line:
            out.append(_mask(line))
            masking = line.endswith(":")
            continue
        if masking and line.startswith((" ", "\t")):
            out.append(_mask(line))
            continue
        masking = False
        out.append(line)
    return "\n".join(out).strip("\n")


@contextmanager
def _cwd(path: Path):
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


_EXITS = re.compile(r"\s+# exits (\d+)$")


def run_d1(command: str, cwd: Path) -> tuple[str, int]:
    """Run one `d1 ...` command line in this process, in `cwd`, as the `d1` script would:
    returns (what the terminal shows, exit code). A command shown ending in `# exits N` is
    expected to exit with N (a sweep with a failing point, say): that counts as 0, any other
    code as a failure."""
    from click.testing import CliRunner

    from d1.cli import cli
    from d1isa.errors import D1Error

    expected = 0
    m = _EXITS.search(command)
    if m:
        command, expected = command[:m.start()], int(m.group(1))
    args = shlex.split(command)
    assert args[0] == "d1", command
    with _cwd(cwd):
        r = CliRunner().invoke(cli, args[1:], catch_exceptions=True)
    out, code = r.output, r.exit_code
    exc = r.exception
    if exc is not None and not isinstance(exc, SystemExit):
        if not isinstance(exc, D1Error):
            raise exc
        out += exc.render() + "\n"
        code = exc.exit_code
    if code == expected:
        return out, 0
    return out, code if code != 0 else -1


def scratch(base: Path) -> Path:
    """A working directory like a checkout: programs/ (a link) and an empty docs/img/."""
    base.mkdir(parents=True, exist_ok=True)
    link = base / "programs"
    if not link.exists():
        link.symlink_to(ROOT / "programs", target_is_directory=True)
    (base / "docs" / "img").mkdir(parents=True, exist_ok=True)
    return base


_BLOCK = re.compile(r"```console\n(.*?)```", re.S)


def _split(body: str) -> list[tuple[str, str, list[str]]]:
    """A console block's (command as shown, command to run, output lines). A command line that
    ends with a backslash continues on the next line, as in a shell."""
    items: list[tuple[str, str, list[str]]] = []
    cont = False
    for line in body.splitlines():
        if cont and items:
            shown, cmd, out = items[-1]
            items[-1] = (shown + "\n" + line, cmd + " " + line.strip().rstrip("\\").strip(), out)
        elif line.startswith("$ "):
            items.append((line[2:], line[2:].rstrip("\\").strip(), []))
        elif items:
            items[-1][2].append(line)
        cont = line.endswith("\\") and (line.startswith("$ ") or cont)
    return items


def parse_blocks(markdown: str) -> list[list[tuple[str, str]]]:
    """Every console block as [(command, output)] (the `$ ` is dropped from commands, and
    continued lines are joined)."""
    return [[(cmd, "\n".join(out)) for _, cmd, out in _split(body)]
            for body in _BLOCK.findall(markdown)]


def images(markdown: str) -> list[str]:
    """Pictures the document shows, relative to docs/."""
    return re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", markdown)


# ---- the figures quoted in the prose ------------------------------------------------------------

def _stats(d: Path, name: str) -> dict:
    return json.loads((d / name).read_text())["stats"]


def _csv(d: Path, name: str) -> list[dict]:
    with (d / name).open() as f:
        return list(csv.DictReader(f))


def facts(d: Path) -> dict[str, str]:
    """Figures for the prose, read from the statistics the commands wrote in `d`."""
    f: dict[str, str] = {}
    ring = _stats(d, "ring.json")
    n = ring["live_nodes"]
    rc = ring["modelled"]["kernel_cycles"]
    f["ring_cycles"] = f"{rc:,}"
    f["ring_hops"] = f"{n - 1}"
    f["ring_per_hop"] = f"{rc / (n - 1):.1f}"
    f["ring_stall_pct"] = f"{100 * ring['modelled']['stall_cycles'] / (n * rc):.0f}"
    busy = ring["modelled"]["busy_cycles"]
    f["ring_busy_pct"] = f"{100 * busy / (n * rc):.1f}"

    bc = {(r["link_bytes_per_cycle"], r["hop_latency"], r["fifo_depth"]): r
          for r in _csv(d, "bcast.csv")}

    def cyc(*k: str) -> int:
        return int(bc[k]["kernel_cycles"])

    bcast = _stats(d, "bcast.json")
    hops = bcast["mesh"]["width"] - 1
    f["bc_hops"] = str(hops)
    f["bc_64"] = f"{cyc('64', '1', '4'):,}"
    f["bc_16"] = f"{cyc('16', '1', '4'):,}"
    f["bc_16_delta"] = f"{cyc('16', '1', '4') - cyc('64', '1', '4'):,}"
    f["bc_16_per_hop"] = f"{(cyc('16', '1', '4') - cyc('64', '1', '4')) / hops:g}"
    f["bc_lat8"] = f"{cyc('64', '8', '4'):,}"
    f["bc_lat8_d1"] = f"{cyc('64', '8', '1'):,}"
    f["bc_lat8_delta"] = f"{cyc('64', '8', '4') - cyc('64', '1', '4'):,}"
    f["bc_lat8_per_hop"] = f"{(cyc('64', '8', '4') - cyc('64', '1', '4')) / hops:g}"
    roofs = sorted({r["binding_roof"] for r in bc.values()})
    f["bc_roofs"] = " and ".join(roofs)
    f["bc_roof_pct"] = f"{max(float(r['percent_of_roof']) for r in bc.values()):.1f}"

    for name in ("summa", "nodb", "naive", "full"):
        s = _stats(d, f"{name}.json")
        md = s["modelled"]
        f[f"{name}_cycles"] = f"{md['kernel_cycles']:,}"
        f[f"{name}_pct"] = f"{md['percent_of_peak']:.2f}"
        f[f"{name}_workers"] = str(sum(1 for v in s["nodes"]["flops"] if v))
        f[f"{name}_mma"] = f"{md['instructions_by_class']['mma_bf16']:,}"
        f[f"{name}_vload"] = f"{md['instructions_by_class']['vload']:,}"
        f[f"{name}_msgs"] = f"{md['link_messages']:,}"
    a, b = _stats(d, "summa.json"), _stats(d, "naive.json")
    f["naive_x"] = f"{b['modelled']['kernel_cycles'] / a['modelled']['kernel_cycles']:.1f}"
    full = _stats(d, "full.json")
    f["full_vs"] = "slower" if full["modelled"]["kernel_cycles"] > \
        a["modelled"]["kernel_cycles"] else "faster"

    link = _csv(d, "link.csv")
    compute = [r for r in link if r["binding_roof"].endswith("peak")]
    f["link_compute_from"] = compute[0]["link_bytes_per_cycle"] if compute else "(none)"
    bound = [r for r in link if r["binding_roof"] == "link bandwidth"]
    f["link_bound_upto"] = bound[-1]["link_bytes_per_cycle"] if bound else "(none)"
    best = min(int(r["kernel_cycles"]) for r in link)
    sat = next(r for r in link if int(r["kernel_cycles"]) == best)
    f["link_saturates"] = sat["link_bytes_per_cycle"]
    f["link_best_pct"] = f"{float(sat['percent_of_peak']):.1f}"
    f["link_low"] = link[0]["link_bytes_per_cycle"]
    f["link_low_pct"] = f"{float(link[0]['percent_of_peak']):.1f}"

    sram = _csv(d, "sram.csv")
    ok = [r for r in sram if r["status"] == "ok"]
    fastest = min(int(r["kernel_cycles"]) for r in ok)
    fits = [r for r in ok if int(r["kernel_cycles"]) == fastest]
    split = [r for r in ok if int(r["kernel_cycles"]) != fastest]
    f["sram_fits"] = f"{int(fits[0]['sram_bytes']):,}"
    f["sram_split"] = f"{int(split[0]['sram_bytes']):,}" if split else "(none)"
    f["sram_split_x"] = f"{int(split[0]['kernel_cycles']) / fastest:.0f}" if split else "(none)"
    f["sram_same"] = "the same" if len({r["kernel_cycles"] for r in fits}) == 1 else "different"
    f["sram_hwm"] = f"{_stats(d, 'sram64.json')['modelled']['sram_high_water_bytes']:,}"
    return f


# ---- the document --------------------------------------------------------------------------------

TEMPLATE = r"""# Tutorial: what the machine did, and what to change

A guided lab in six steps. Each step runs a few `d1` commands on the programs in `programs/`
and reads what they print: the timing model's figures (always labelled *modelled*), pictures of
the mesh, timeline traces, rooflines and sweeps of the machine description. Every command below
was run by `docs/tutorial_gen.py`, and its output is pasted exactly as printed; the test suite
(`tests/test_tutorial.py`) runs them all again and checks the output still matches, so this page
cannot go stale. Figures measured on the host (how fast the emulator ran) vary from run to run
and are the only thing the check ignores.

Run the commands from the top of a checkout with the virtualenv active (`make demo` creates it).
They write their statistics files into the current directory and their pictures under `docs/img/`.

| step | program | lesson |
|---|---|---|
| 1 | `d1 info` | the machine: nodes, links, SRAM, peaks |
| 2 | `programs/asm/token_ring.d1s` | latency: one message at a time around the whole chip |
| 3 | `programs/asm/vadd.d1s` | local compute: no messages, bound by loads and stores |
| 4 | `programs/asm/row_broadcast.d1s` | bandwidth and pipelining along a row |
| 5 | `programs/matmul.d1k` | placement: naive gather vs systolic SUMMA; double buffering |
| 6 | `programs/matmul.d1k` | co-design: bandwidth, SRAM, the binding roof, harvested nodes |

## 1. The machine

Everything starts from one machine description (`d1isa/machines/d1.toml`); the assembler, the
compiler and the emulator all read it. `d1 info` prints it with the figures derived from it, beside
the published D1 ones:

```console
$ d1 info
```

Three numbers shape everything below. Compute is plentiful: 512 bf16 FLOP per cycle per node on
the matrix unit, only 32 fp32 FLOP per cycle on the vector unit. A link moves 64 B per cycle to one
neighbour, and there is no other way to move data. And each node has 1.25 MiB of SRAM, which holds
all of its data. Six nodes are *harvested* (dead): messages pass straight through their routers,
but they compute nothing. Every command takes `--machine`, `--mesh CxR` and `--set KEY=VALUE` to
change any of these (docs/MACHINE.md lists them all).

## 2. Latency: a token ring

`token_ring.d1s` passes one 8-byte token along a serpentine path through every live node; each
node adds one and sends it on. Nothing overlaps, so the kernel time is pure latency:

```console
$ d1 run programs/asm/token_ring.d1s --stats --json ring.json
```

<<ring_cycles>> cycles for <<ring_hops>> hops is <<ring_per_hop>> cycles per hop: one cycle on the
wire (`hop_latency`), one to serialise 8 bytes, and the receive, add, branch and send
instructions of each node (docs/TIMING.md gives the equations). The nodes were busy for only
<<ring_busy_pct>>% of their node-cycles and waited for <<ring_stall_pct>>%. Where they waited is
easiest to see on the mesh. `d1 viz` reads the statistics file that `--json` wrote:

```console
$ d1 viz ring.json --term --metric stall
$ d1 viz ring.json -o docs/img/ring.png
```

The stall percentage climbs along the token's path, row by row, west to east and back: each node
waits for every node before it. `XX` marks the harvested nodes, which the path skips. The picture
has four panels: busy %, stalled %, bytes per directed link (the arrows trace the serpentine) and
the SRAM high-water mark:

![token ring on the d1 mesh](img/ring.png)

A timeline shows the same thing in time. `--trace` writes a Chrome / Perfetto trace: open
`ring-trace.json` in <https://ui.perfetto.dev> (or `chrome://tracing`). There is one track per
node, named `(x,y) id N`; slices for each program region (for assembly, each code label) and each
wait; and an arrow for every message, from its send to the moment it was consumed:

```console
$ d1 run programs/asm/token_ring.d1s --trace ring-trace.json
```

## 3. Local compute: a vector add

`vadd.d1s` adds two rows of 64 floats on every node: four `vld, vld, vadd, vst` trips, no messages
at all. `--regions` adds per-region statistics (here the regions are the labels `entry` and
`loop`), and with them the bytes the instructions load and store in SRAM:

```console
$ d1 run programs/asm/vadd.d1s --mesh 4x4 --regions --stats
```

No stalls and no link traffic, yet only a few per cent of the fp32 peak: each 16-lane `vadd`
(16 FLOP) needs two 64-byte loads and a 64-byte store around it. The roofline says which roof binds
such a kernel. Its x axis is *arithmetic intensity*, FLOPs per byte moved, counted twice: per
byte put on neighbour links, and per byte loaded or stored in SRAM. The roofs are the compute peaks
and the two bandwidths, all derived from the machine description (`d1/analysis.py` explains the
definitions; the SRAM bandwidth of 192 B/cycle per node is the published D1 port width, a roof the
timing model itself does not charge for):

```console
$ d1 roofline programs/asm/vadd.d1s --mesh 4x4
```

At 1/12 FLOP per SRAM byte the loop is bound by SRAM bandwidth. It reaches only part of even that
roof because each load costs 2 cycles and the loop's own address and branch instructions take
their turn on the single-issue core.

## 4. Bandwidth and pipelining: a row broadcast

`row_broadcast.d1s` has the west-edge node of every row send four 64-byte vectors east; every node
on the way stores a copy and forwards it (`relayb`), and the east end acknowledges back west. On
the d1 machine a row has <<bc_hops>> hops:

```console
$ d1 run programs/asm/row_broadcast.d1s --json bcast.json --trace bcast-trace.json
$ d1 viz bcast.json -o docs/img/bcast.png
```

![row broadcast on the d1 mesh](img/bcast.png)

Relaying is store-and-forward per message, but the four messages follow each other down the row
like a pipeline: while one node relays vector k, its east neighbour already relays vector k-1 (in
`bcast-trace.json` the message arrows form a staircase). `d1 sweep` runs the program for every
combination of machine parameters, here link bandwidth, hop latency and FIFO depth:

```console
$ d1 sweep programs/asm/row_broadcast.d1s --set link_bytes_per_cycle=16,64 \\
    --set hop_latency=1,8 --set fifo_depth=1,4 --csv bcast.csv
```

Reading the table:

- **Bandwidth is paid per hop.** At 16 B/cycle a 64-byte message takes 4 cycles on the wire
  instead of 1, and the broadcast takes <<bc_16>> cycles instead of <<bc_64>>: <<bc_16_delta>>
  more, <<bc_16_per_hop>> per hop. Store-and-forward pays the serialisation at every hop, but only
  once for the whole pipeline of four vectors, not once per vector.
- **Latency is paid per hop, twice.** Eight cycles per hop instead of one costs <<bc_lat8_delta>>
  cycles, <<bc_lat8_per_hop>> per hop: the vectors cross the row once and the acknowledgement
  crosses it back.
- **FIFO depth matters only when messages are in flight long.** With one-cycle hops every receiver
  is ready in time and a single FIFO slot is enough. With eight-cycle hops a one-slot FIFO stalls
  the sender until the previous message is consumed: <<bc_lat8_d1>> cycles instead of
  <<bc_lat8>>.
- The binding roof is <<bc_roofs>>, but the kernel reaches at most <<bc_roof_pct>>% of it:
  it is bound by latency, which no roof shows.

## 5. Matrix multiply: placement and overlap

`matmul.d1k` multiplies bf16 [128, 256] @ [256, 96]. The compiler places it on a 16 x 16 grid of
the d1 mesh (the rows and columns with harvested nodes only relay) and by default uses a systolic
scheme, SUMMA: panels of A travel along rows and panels of B along columns, one hop per phase,
while the matrix units multiply the panels that have arrived (docs/COMPILER.md). Two compiler
options switch parts of that off: `-O double_buffer=false` exchanges every panel first and
multiplies afterwards, and `-O matmul=naive` gathers each node's whole row of A and column of B
before multiplying at all:

```console
$ d1 run programs/matmul.d1k --check --regions --json summa.json
$ d1 run programs/matmul.d1k -O double_buffer=false --regions --json nodb.json
$ d1 run programs/matmul.d1k -O matmul=naive --regions --json naive.json
```

SUMMA takes <<summa_cycles>> cycles (<<summa_pct>>% of the bf16 peak); without double buffering
<<nodb_cycles>>; the naive gather <<naive_cycles>>, <<naive_x>> times longer. `d1 diff` puts two
runs side by side and picks out what changed most:

```console
$ d1 diff summa.json naive.json --top 3
```

The naive version moves about as many bytes, but it moves them first and computes afterwards. The
gather is a redistribution: pieces are packed and unpacked with vector loads and stores
(<<naive_vload>> `vload`s against <<summa_vload>>) and relayed along rows and columns, while the
matrix units idle; then each node multiplies with one long `mmak` per tile (<<naive_mma>> mma
instructions against <<summa_mma>> for SUMMA's one per tile and panel). SUMMA starts multiplying as
soon as the first panels arrive, and overlaps the rest. The pictures show where the time goes:

```console
$ d1 viz summa.json -o docs/img/matmul-summa.png
$ d1 viz naive.json -o docs/img/matmul-naive.png
```

![SUMMA matmul on d1](img/matmul-summa.png)

![naive matmul on d1](img/matmul-naive.png)

## 6. Co-design: what should the next machine change?

This matmul is small for 256 nodes (each multiplies an 8 x 8 block of C by 8 x 256 and 256 x 8
panels), so it spends most of its time moving data. On a 4 x 4 mesh each node has more to do, and
the question "what limits it?" has a clear answer. Sweep the link bandwidth:

```console
$ d1 sweep programs/matmul.d1k --mesh 4x4 --set link_bytes_per_cycle=4,8,16,32,64,128 \\
    --csv link.csv --plot docs/img/sweep-link.png
```

![kernel time against link bandwidth](img/sweep-link.png)

Up to <<link_bound_upto>> B/cycle the link roof binds: the kernel is bandwidth-bound, and at
<<link_low>> B/cycle reaches only <<link_low_pct>>% of peak. From <<link_compute_from>> B/cycle
on, the compute peak is the lowest roof: the kernel has turned compute-bound, and more bandwidth
helps less and less. Beyond <<link_saturates>> B/cycle nothing changes at all
(<<link_best_pct>>% of peak): the rest is the work each node does itself, and the waits of the
pipeline's fill and drain. The roofline of the bandwidth-starved machine shows the link roof below
the peak at the kernel's intensity:

```console
$ d1 roofline programs/matmul.d1k --mesh 4x4 --set link_bytes_per_cycle=8 -o docs/img/roofline-8.png
```

![roofline at 8 B/cycle](img/roofline-8.png)

SRAM is a capacity, not a speed, in this model. Sweep it, and the compiler says where the program
stops fitting (a failed point makes the sweep exit with status 1, after every row is written):

```console
$ d1 sweep programs/matmul.d1k --mesh 4x4 --set sram_bytes=24576,32768,40960,65536,1310720 \\
    --csv sram.csv  # exits 1
$ d1 run programs/matmul.d1k --mesh 4x4 --set sram_bytes=65536 --json sram64.json
```

From <<sram_fits>> B per node up, every size runs in <<sram_same>> time: the kernel's
high-water mark is <<sram_hwm>> B, so a machine for this kernel could trade most of its SRAM
for something else, but not all of it. At <<sram_split>> B the matmul's panels no longer fit,
and the compiler computes it as a sum of products over slices of K instead (`d1 run` says so
in a note; docs/COMPILER.md, "Matmuls larger than a node's panels"): it still runs, but
<<sram_split_x>> times slower, since every slice is a layout change across the mesh. Below that
nothing fits, and the error names the value that did not.

Last, the harvested nodes. The d1 machine has six dead nodes; `--set 'harvested=[]'` gives the
perfect 18 x 20 chip:

```console
$ d1 run programs/matmul.d1k --set 'harvested=[]' --regions --json full.json
$ d1 diff summa.json full.json --top 3
```

The perfect chip has 360 nodes, but the same number do arithmetic on both: <<summa_workers>> on
d1 and <<full_workers>> on the perfect chip, because C = 128 x 96 has only 16 x 12 tiles of 8 x 8
to share out. More nodes only make the grid bigger (20 rows x 18 columns instead of 16 x 16), and
the perfect chip is <<full_vs>>: <<full_cycles>> cycles against <<summa_cycles>>. K is now split
into 20 blocks down B and 18 across A, so the panels (their common refinement) are smaller and more
numerous: <<full_mma>> mma instructions against <<summa_mma>>, <<full_msgs>> messages against
<<summa_msgs>>, on lines of 18 and 20 nodes instead of 16. For this kernel the harvested nodes cost
nothing; for a larger one, re-run these two commands and the sweeps above and see where the
balance tips.

### Where to go next

- `d1 roofline programs/attention.d1k --mesh 4x4 -o attention.png`: which of attention's
  operations are bound by what (the elementwise ones by SRAM, the matmuls by compute)?
- `d1 run programs/layernorm.d1k --trace ln.json`: the reductions' waits in the timeline.
- `d1 sweep programs/mlp.d1k --set link_bytes_per_cycle=16,32,64,128 --set fifo_depth=1,4`.
- `d1 viz FILE.json --term --metric flops|sram` for a quick look without pictures.
"""


def generate(work: Path) -> str:
    """Run every command of TEMPLATE in `work` and return the finished document."""
    scratch(work)
    pieces = []
    pos = 0
    outputs: list[tuple[int, int, list[tuple[str, str]]]] = []
    for m in _BLOCK.finditer(TEMPLATE):
        done = []
        for shown, cmd, _ in _split(m.group(1)):
            print(f"$ {cmd}", file=sys.stderr, flush=True)
            out, code = run_d1(cmd, work)
            if code != 0:
                raise SystemExit(f"tutorial command failed (exit {code}): {cmd}\n{out}")
            done.append((shown, out.rstrip("\n")))
        outputs.append((m.start(), m.end(), done))
    values = facts(work)

    def fill(text: str) -> str:
        def one(m: re.Match) -> str:
            if m.group(1) not in values:
                raise KeyError(f"no figure named {m.group(1)!r} for the tutorial")
            return values[m.group(1)]
        return re.sub(r"<<(\w+)>>", one, text)

    for start, end, done in outputs:
        pieces.append(fill(TEMPLATE[pos:start]))
        body = "\n".join(f"$ {cmd}\n{out}" if out else f"$ {cmd}" for cmd, out in done)
        pieces.append(f"```console\n{body}\n```")
        pos = end
    pieces.append(fill(TEMPLATE[pos:]))
    return "".join(pieces)


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="d1-tutorial-") as tmp:
        work = Path(tmp)
        text = generate(work)
        IMG.mkdir(parents=True, exist_ok=True)
        for name in images(text):
            src = work / "docs" / name
            if not src.exists():
                raise SystemExit(f"the tutorial shows {name}, but no command wrote it")
            shutil.copyfile(src, ROOT / "docs" / name)
    DOC.write_text(text, encoding="utf-8")
    print(f"wrote {DOC.relative_to(ROOT)} and {len(images(text))} pictures in "
          f"{IMG.relative_to(ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
