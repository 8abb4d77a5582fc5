@0xd75433259039c052;
# Control messages of the transport: what hosts tell each other once, at
# start-up, before any slot runs. Nothing here travels during a step.

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("lockstep::transport::schema");

const controlFormatVersion :UInt32 = 1;

# One chip's registered receive arena as seen by its writers.
struct ArenaKey {
  chip @0 :UInt32;       # chip index within the host
  remoteBase @1 :UInt64; # address writers add offsets to: the arena's
                         # virtual address under FI_MR_VIRT_ADDR, else 0
  key @2 :UInt64;        # fi_mr_key of the arena's registration
  bytes @3 :UInt64;      # registered length (checked against the table)
}

# A host's start-up announcement, published through the rendezvous.
struct HostHello {
  formatVersion @0 :UInt32;  # = controlFormatVersion
  host @1 :UInt32;
  provider @2 :Text;         # every host must run the same provider
  tableDigest @3 :UInt64;    # every host must run the same slot table
  fabricAddress @4 :Data;    # fi_getname of the host's endpoint
  arenas @5 :List(ArenaKey); # receive arenas of this host's chips
  mailboxBase @6 :UInt64;    # small region peers write credits/clock data to
  mailboxKey @7 :UInt64;
  mailboxBytes @8 :UInt64;
  slotMode @9 :SlotMode;     # every host must run the same slot clock
  slotNs @10 :UInt64;        # paced slot length (transport.slot_ns)
  doorbell @11 :Text;        # shared-memory name peers ring to wake this
                             # host (providers without a CQ wait object);
                             # empty when it blocks on its CQ instead
}

enum SlotMode {
  logical @0;
  paced @1;
}
