"""The emulator's network: message timing by hand (docs/TIMING.md), FIFO back-pressure, harvested
routers, relays, and the wait-for reports of deadlocked and stuck runs.

Costs are the d1 defaults unless a test overrides them: cost_send = cost_recv = 1,
hop_latency = 1, link_bytes_per_cycle = 64, so an 8-byte message takes ser = 1 cycle.
"""

from __future__ import annotations

import pytest
from progkit import EAST, SRAM, N, S, W, machine, make_obj  # noqa: F401

from d1isa import traps
from d1isa.errors import D1Error
from d1isa.isa import encode as E
from emulator import Emulator


def run(programs, m=None, data=(), **kw):
    emu = Emulator(make_obj(m or machine(), programs, data), **kw)
    return emu, emu.run()


def test_send_receive_arrival_time():
    # node 0: movi (c 0 -> 1); send at c = 1: depart 1, arrive 1 + L 1 + ser 1 = 3; c = 2
    # node 1: recv at c = 0 waits until 3 (stall 3), c = 4; then halt -> 5
    emu, res = run({0: [E("movi", rd=1, imm=7), E("send", dir=EAST, rs1=1), E("halt")],
                    1: [E("recv", rd=2, dir=W), E("halt")]}, quantum=1)
    assert res.status == "halted"
    sd = emu.state_dict()
    assert emu.regs(1)[2] == 7
    assert list(sd["clock"][:2]) == [3, 5]
    assert sd["stats"]["stall"][1] == 3 and sd["stats"]["busy"][1] == 2
    link = 1 * 4 + W                                    # the FIFO at node 1 from the west
    assert sd["link_pushed"][link] == 1 and sd["link_wire_free"][link] == 2
    assert (sd["stats"]["link_bytes"][0, EAST], sd["stats"]["link_msgs"][0, EAST],
            sd["stats"]["link_busy"][0, EAST]) == (8, 1, 1)


def test_serialisation_uses_the_link_bandwidth():
    # 64 bytes over 16 B/cycle: ser = 4; hop latency 3: arrive = 0 + 3 + 4 = 7
    m = machine(link_bytes_per_cycle=16, hop_latency=3)
    emu, res = run({0: [E("vsend", dir=EAST, rs1=0), E("halt")],
                    1: [E("vrecv", rd=0, dir=W), E("halt")]}, m=m)
    assert res.status == "halted"
    assert emu.clock(1) == 7 + 1 + 1
    assert emu.state_dict()["stats"]["link_busy"][0, EAST] == 4


def test_a_full_fifo_delays_the_sender():
    # fifo_depth 1. Node 1 works 10 cycles, then takes 3 messages; node 0 sends them at once.
    #   send 0: c 0 -> 1, arrives 2.             recv 0 at 10: c = 11 (consumed 11)
    #   send 1: slot frees at 11: stall 10, issue 11, arrive 13, c = 12
    #                                            recv 1: start 13 (stall 2), c = 14
    #   send 2: slot frees at 14: stall 2, issue 14, arrive 16, c = 15; halt: 16
    #                                            recv 2: start 16 (stall 2), c = 17; halt: 18
    m = machine(fifo_depth=1)
    sender = [E("send", dir=EAST, rs1=0)] * 3 + [E("halt")]
    receiver = [E("nop")] * 10 + [E("recv", rd=1, dir=W)] * 3 + [E("halt")]
    for q in (1, 3, 64):
        emu, res = run({0: sender, 1: receiver}, m=m, quantum=q)
        sd = emu.state_dict()
        assert list(sd["clock"][:2]) == [16, 18]
        assert list(sd["stats"]["stall"][:2]) == [12, 4]
        assert list(sd["stats"]["busy"][:2]) == [4, 14]
    st = emu.stats()["modelled"]
    assert st["stall_send_cycles"] == 12 and st["stall_recv_cycles"] == 4


def test_blocked_sender_shows_in_node_states_midway():
    m = machine(fifo_depth=1)
    emu = Emulator(make_obj(m, {0: [E("send", dir=EAST, rs1=0)] * 2 + [E("halt")],
                                1: [E("nop")] * 5 + [E("recv", rd=1, dir=W)] * 2 + [E("halt")]}))
    emu.step(2, node=0)
    assert emu.node_states()[0] == "blocked on send" and emu.pc(0) == 1
    assert len(emu.fifo(1, "W")) == 1
    assert emu.run().status == "halted"


def test_sends_pass_straight_through_harvested_routers():
    m = machine("h6x5")               # (2,1) and (3,3) are harvested
    src, dst = m.node_id(1, 1), m.node_id(3, 1)
    assert int(m.neighbors[src, EAST]) == dst and int(m.link_hops[src, EAST]) == 2
    emu, res = run({src: [E("movi", rd=1, imm=99), E("send", dir=EAST, rs1=1), E("halt")],
                    dst: [E("recv", rd=1, dir=W), E("halt")]}, m=m)
    assert res.status == "halted" and emu.regs((3, 1))[1] == 99
    # sent at c = 1, two hops of latency 1, ser 1: arrives at 4; recv done at 5, halt 6
    assert emu.clock((3, 1)) == 6


def test_relay_is_store_and_forward():
    m = machine("3x1")
    emu, res = run({0: [E("movi", rd=1, imm=5), E("send", dir=EAST, rs1=1), E("halt")],
                    1: [E("relay", dir=W, dir2=EAST), E("halt")],
                    2: [E("recv", rd=1, dir=W), E("halt")]}, m=m)
    sd = emu.state_dict()
    # node 0 sends at 1 -> arrives 3. Relay: receive 3 -> 4, send issued at 4 -> arrives 6.
    assert res.status == "halted" and emu.regs(2)[1] == 5
    assert list(sd["clock"]) == [3, 6, 8]
    assert sd["stats"]["stall"][1] == 3 and sd["stats"]["busy"][1] == 3   # relay 1+1, halt 1
    assert sd["stats"]["count"][1].sum() == 2                             # one recv, one sys
    assert sd["stats"]["link_msgs"][1, EAST] == 1


def test_block_messages_copy_sram_and_count_toward_the_high_water_mark():
    m = machine("3x1")
    payload = bytes(range(1, 41))
    prog0 = [E("movi", rd=1, imm=100), E("movi", rd=2, imm=40),
             E("sendb", dir=EAST, rs1=1, rs2=2), E("halt")]
    prog1 = [E("movi", rd=1, imm=200), E("movi", rd=2, imm=40),
             E("relayb", dir=W, dir2=EAST, rs1=1, rs2=2), E("halt")]
    prog2 = [E("movi", rd=1, imm=300), E("movi", rd=2, imm=40),
             E("recvb", dir=W, rs1=1, rs2=2), E("halt")]
    emu, res = run({0: prog0, 1: prog1, 2: prog2}, m=m, data=[(0, 100, payload)])
    assert res.status == "halted"
    assert emu.sram(1, 200, 40).tobytes() == payload and emu.sram(2, 300, 40).tobytes() == payload
    assert list(emu.state_dict()["stats"]["sram_hwm"]) == [140, 240, 340]


def test_recvb_length_mismatch_traps_and_keeps_the_message():
    m = machine("3x1")
    emu, res = run({0: [E("movi", rd=2, imm=16), E("sendb", dir=EAST, rs1=0, rs2=2), E("halt")],
                    1: [E("movi", rd=2, imm=8), E("recvb", dir=W, rs1=0, rs2=2)]}, m=m)
    assert res.status == "trapped" and res.traps[0].cause == traps.MESSAGE_LENGTH_MISMATCH
    assert [msg[0] for msg in emu.fifo(1, W)] == [16]


def test_deadlock_cycle_is_detected_and_reported():
    emu, res = run({0: [E("recv", rd=1, dir=EAST), E("send", dir=EAST, rs1=1), E("halt")],
                    1: [E("recv", rd=1, dir=W), E("send", dir=W, rs1=1), E("halt")]})
    assert res.status == "deadlock" and not res.ok
    chain = res.deadlock.chains[0]
    assert chain.cycle and [w.where.node for w in chain.waits] == [0, 1]
    text = res.report()
    assert "deadlock: a cycle of 2 waiting nodes" in text
    assert "(0,0) pc 0 `recv r1, E` waits to receive from E (1,0)" in text
    assert "(1,0) pc 0 `recv r1, W` waits to receive from W (0,0)" in text
    assert "(0,0) again (a cycle)" in text


def test_send_cycle_through_full_fifos():
    # fifo_depth 1: both send twice before receiving; the second sends find the FIFOs full
    m = machine(fifo_depth=1)
    prog = lambda d: [E("send", dir=d, rs1=0), E("send", dir=d, rs1=0),  # noqa: E731
                      E("recv", rd=1, dir=d), E("halt")]
    emu, res = run({0: prog(EAST), 1: prog(W)}, m=m)
    assert res.status == "deadlock"
    text = res.report()
    assert "(0,0) pc 1 `send E, r0` waits to send E to (1,0), whose W FIFO is full (1/1)" in text
    assert "(1,0) pc 1 `send W, r0` waits to send W to (0,0), whose E FIFO is full (1/1)" in text


def test_waiting_on_a_stopped_node_is_not_a_cycle():
    # (0,1) waits on (0,0), which waits on (1,0), which has halted
    emu, res = run({0: [E("recv", rd=1, dir=EAST), E("halt")],
                    1: [E("halt")],
                    2: [E("recv", rd=1, dir=N), E("halt")]})
    assert res.status == "stuck"
    chain = res.deadlock.chains[0]
    assert not chain.cycle and [w.where.node for w in chain.waits] == [2, 0]
    assert chain.end.node == 1 and chain.end_state == "halted"
    text = res.report()
    assert "(0,1) pc 0 `recv r1, N` waits to receive from N (0,0)" in text
    assert "(1,0) pc 0 `halt` has halted" in text and "not a cycle" in text


def test_a_chain_ending_at_a_node_without_code_says_so():
    # (1,0) has no code: it did not halt at some instruction, it never ran one
    emu, res = run({0: [E("recv", rd=1, dir=EAST), E("halt")]})
    assert res.status == "stuck"
    assert res.deadlock.chains[0].end_state == "no code (it halts at the start)"
    assert "(1,0) pc 0 has no code (it halts at the start)" in res.report()


def test_a_trap_is_reported_before_the_nodes_that_wait_on_it():
    emu, res = run({0: [E("recv", rd=1, dir=EAST), E("halt")], 1: [E("trap", uimm=3)]})
    assert res.status == "trapped"
    assert res.traps[0].node == 1 and res.deadlock.chains[0].end_state.startswith("trapped")


def test_fifo_contents_in_the_state_dict():
    m = machine(fifo_depth=4)
    emu, res = run({0: [E("movi", rd=1, imm=1), E("send", dir=EAST, rs1=1),
                        E("movi", rd=1, imm=2), E("send", dir=EAST, rs1=1), E("halt")]}, m=m)
    assert res.status == "halted"
    fifos = emu.state_dict()["fifos"]
    assert fifos[1 * 4 + W] == [(8, 3, (1).to_bytes(8, "little")),
                                (8, 5, (2).to_bytes(8, "little"))]
    assert all(not f for i, f in enumerate(fifos) if i != 1 * 4 + W)


def test_fifo_reads_by_direction_name_and_rejects_a_bad_one():
    emu, res = run({0: [E("send", dir=EAST, rs1=0), E("halt")]})
    assert emu.fifo(1, "w") == emu.fifo(1, W) == [(8, 2, bytes(8))]
    for bad in ("X", "", 4, -1):
        with pytest.raises(D1Error, match="direction must be N, E, S, W or 0..3"):
            emu.fifo(1, bad)
