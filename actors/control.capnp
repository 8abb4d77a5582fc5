@0x87fb1f298556b4f8;
# The cluster's control plane: what host processes, the coordinator (rank 0)
# and clients (the `lockstep` CLI) tell each other. One TCP connection per
# host and per client to the head; each message is one Envelope in Cap'n
# Proto's standard stream framing (docs/cluster.md). Nothing here carries
# tensors: those cross the slotted transport in their slots.

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("lockstep::actors::schema");

const controlProtocolVersion :UInt32 = 1;

# --- Hosts joining -----------------------------------------------------------

struct Join {
  protocolVersion @0 :UInt32;  # = controlProtocolVersion
  rank @1 :UInt32;             # host index in the config
  token @2 :Text;              # the cluster token
  pid @3 :UInt32;
  configDigest @4 :Text;       # SHA-256 of the config's canonical form
}

struct JoinReply {
  ok @0 :Bool;
  error @1 :Text;              # why not, when refused
}

# What to run: the plan, where the weights come from, the slot settings.
struct Setup {
  plan @0 :Data;               # planner/plan.capnp
  weightSeed @1 :UInt64;       # tiles a host lacks are generated from this
  slotMode @2 :Text;           # logical | paced
  slotNs @3 :UInt64;           # paced slot length
}

# Transport start-up: each host's transport hello (transport/control.capnp),
# relayed by the head: no shared file system between hosts.
struct Hello {
  host @0 :UInt32;
  message @1 :Data;
}
struct FetchHello {
  host @0 :UInt32;
}

struct Ready {
  rank @0 :UInt32;
  chips @1 :UInt32;            # chip actors started
  tilesLoaded @2 :UInt64;      # weight bytes loaded into arenas
  tilesGenerated @3 :UInt64;   # of them generated into the store first
  error @4 :Text;              # set: setup failed (the host exits)
}

# Per chip and per link figures, sent with each heartbeat.
struct ChipCounters {
  chip @0 :Text;               # "h3.c5"
  opsRun @1 :UInt64;
  stepsRun @2 :UInt64;
  sramBytes @3 :UInt64;        # the chip's arena
  kernelNs @4 :UInt64;         # thread CPU time in its ops' kernels
  handlerNs @5 :UInt64;        # thread CPU time in its handlers (ops, sends)
}
struct LinkCounters {
  link @0 :Text;               # "h3.c5->h4.c0"
  bytesSent @1 :UInt64;
  transfersSent @2 :UInt64;
  bytesReceived @3 :UInt64;
  transfersReceived @4 :UInt64;
  slotMisses @5 :UInt64;
  maxLatenessNs @6 :Int64;     # paced: the latest arrival after its slot
}
struct Heartbeat {
  rank @0 :UInt32;
  chips @1 :List(ChipCounters);
  links @2 :List(LinkCounters);
  log @3 :Text;                # where this host logs
  cpuNs @4 :UInt64;            # CPU time of the whole process so far
}

# --- Clients -----------------------------------------------------------------

struct Generate {
  token @0 :Text;              # the cluster token
  prompt @1 :List(Int32);
  maxTokens @2 :UInt32;
  seed @3 :UInt64;
  temperature @4 :Float32;
  topK @5 :UInt32;
  topP @6 :Float32;
}

struct Token {
  index @0 :UInt32;            # 0 for the first generated token
  token @1 :Int32;
}

struct Done {
  tokens @0 :List(Int32);
  logitsSha256 @1 :Text;
  ttftMs @2 :Float64;          # request received to first token
  tokensPerS @3 :Float64;      # generated tokens / (first token to last)
  error @4 :Text;              # set: the request failed (kind, detail)
  errorKind @5 :UInt8;         # lockstep::error_kind of the failure
}

struct StatusRequest {
  token @0 :Text;
}
struct Status {
  ready @0 :Bool;
  json @1 :Text;               # the `lockstep status -o json` document
}

struct Shutdown {
  token @0 :Text;              # from a client: the cluster token
}

# Paced mode, after the cluster idled: step `step` and the later ones start
# at `atRefNs` on host 0's transport clock (host_transport::resume_at).
struct Resume {
  step @0 :UInt64;
  atRefNs @1 :Int64;
}

struct Envelope {
  union {
    join @0 :Join;
    joinReply @1 :JoinReply;
    setup @2 :Setup;
    hello @3 :Hello;
    fetchHello @4 :FetchHello;
    ready @5 :Ready;
    start @6 :Void;            # head -> hosts: every host is ready
    heartbeat @7 :Heartbeat;
    generate @8 :Generate;
    token @9 :Token;
    done @10 :Done;
    statusRequest @11 :StatusRequest;
    status @12 :Status;
    shutdown @13 :Shutdown;
    error @14 :Text;           # a refusal or failure, one line
    resume @15 :Resume;        # head -> hosts (paced)
  }
}
