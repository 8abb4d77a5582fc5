@0x88ddc356df854bcb;
# The slot table: the wire-level half of a plan. For every directed
# chip-to-chip link it lists, in slot order, each transfer the link carries
# during one step of the periodic slot program: when it starts, how long the
# link is busy, exactly how many bytes cross, and where they are read from and
# written to. The planner's plans (planner/plan.capnp) contain exactly this
# table; the transport executes it and refuses anything it does not list.
#
# Nothing in this table travels with the data: the receiver knows what
# arrived from the slot in which it completes.

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("lockstep::transport::schema");

const slotTableFormatVersion :UInt32 = 1;

# A chip's stable id: chip `chip` of host (process) `host`, written "h3.c5".
struct ChipId {
  host @0 :UInt32;
  chip @1 :UInt32;
}

struct Transfer {
  # Plan-wide id of this transfer (cross-references compute ops in the plan
  # and appears in errors and traces). Never sent on the wire.
  id @0 :UInt32;

  # First slot of the transfer within one step's slot program, and the number
  # of consecutive slots the link is busy with it (>= 1).
  startSlot @1 :UInt32;
  durationSlots @2 :UInt32;

  # Exact bytes that cross the link, fixed Cap'n Proto framing included.
  bytes @3 :UInt64;

  # Where the bytes are read from: an offset into the sender chip's send
  # arena.
  srcOffset @4 :UInt64;

  # Where they land: an offset into the receiver chip's receive arena, per
  # step parity. Step k writes to dstOffsets[k % length]; two entries give
  # alternating buffers, so step k+1 never overwrites what step k's consumer
  # may still read.
  dstOffsets @5 :List(UInt64);
}

# All transfers of one directed link, sorted by startSlot, non-overlapping.
struct LinkSchedule {
  src @0 :ChipId;
  dst @1 :ChipId;
  transfers @2 :List(Transfer);
}

# Registered memory a chip needs: what it receives into and sends from.
struct Arena {
  chip @0 :ChipId;
  recvBytes @1 :UInt64;
  sendBytes @2 :UInt64;
}

struct SlotTable {
  formatVersion @0 :UInt32;    # = slotTableFormatVersion
  slotsPerStep @1 :UInt32;     # length of the periodic slot program
  slotNs @2 :UInt64;           # nominal slot length the schedule assumes
  arenas @3 :List(Arena);      # one per chip that sends or receives
  links @4 :List(LinkSchedule);
  # Steps may start every periodSlots slots (0: every slotsPerStep, steps do
  # not overlap). Paced mode times step k's slot s at (k * period + s); with
  # overlapping steps correctness still rests on alternating receive windows
  # and back-pressure, as in logical mode.
  periodSlots @5 :UInt32;
}
