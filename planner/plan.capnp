@0xfdce8c48b8d80e2a;
# A compiled plan: placement with SRAM offsets, and two step programs
# (decode, prefill), each every node's ops with their operands and, as its
# per-link part, exactly the transport's slot table. Cached in RocksDB
# (column `plans`) under the plan hash.

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("lockstep::planner::schema");

using Transport = import "/transport/slot_table.capnp";

const planFormatVersion :UInt32 = 2;

struct Shard {
  chip @0 :Transport.ChipId;
  layer @1 :UInt32;        # 0xFFFF for global tensors
  tensor @2 :UInt8;        # model::tensor_kind
  rowBegin @3 :UInt32;
  rowEnd @4 :UInt32;
  colBegin @5 :UInt32;
  colEnd @6 :UInt32;
  bytes @7 :UInt64;
  offset @8 :UInt64;       # SRAM offset of the elements (row-major)
  scalesOffset @9 :UInt64; # SRAM offset of the int8 row scales
}

struct KvSlice {
  # K and V of kv heads [kvHeadBegin, kvHeadEnd) of sequences [0, sequences)
  # at positions [0, positions): [sequence][position][kv head][head_dim] f32.
  chip @0 :Transport.ChipId;
  layer @1 :UInt32;
  kvHeadBegin @2 :UInt32;
  kvHeadEnd @3 :UInt32;
  sequences @4 :UInt32;
  positions @5 :UInt32;
  kOffset @6 :UInt64;
  vOffset @7 :UInt64;
}

struct TreeNode {
  first @0 :UInt32;
  count @1 :UInt32;
}

struct ReductionPart {
  chip @0 :Transport.ChipId;
  firstBlock @1 :UInt32;
  endBlock @2 :UInt32;
}

struct BufferShape {
  # rows x model::token_row (16 bytes) if rowTable, then [rows][cols][pieces]
  # f32: elements [colFirst, colFirst + cols) of x or of the logits.
  rows @0 :UInt32;
  colFirst @1 :UInt32;
  cols @2 :UInt32;
  pieces @3 :UInt32;
  rowTable @4 :Bool;
}

struct Operand {
  offset @0 :UInt64;       # SRAM offset (a received input: parity-0 window)
  shape @1 :BufferShape;
  transfer @2 :UInt32;     # input arriving by this transfer (or 0xFFFFFFFF)
  producer @3 :UInt32;     # input written by this op of the node
  producerOutput @4 :UInt32;
  carried @5 :Bool;        # written by the previous step (the token loop)
}

struct Op {
  id @0 :UInt32;
  kind @1 :UInt8;          # planner::op_kind
  chip @2 :Transport.ChipId; # a chip, or a host endpoint (feed, sample)
  layer @3 :UInt32;
  microBatch @4 :UInt32;
  startSlot @5 :UInt32;
  durationSlots @6 :UInt32;
  afterOps @7 :List(UInt32);
  afterTransfers @8 :List(UInt32);   # Transfer.id values of the slot table
  nBlocks @9 :UInt32;                # combine: reduction blocks
  parts @10 :List(ReductionPart);    # combine: who computed which blocks
  nodes @11 :List(TreeNode);         # combine: canonical tree nodes, in order
  outFirst @12 :UInt32;              # combine: output elements [outFirst,
  outEnd @13 :UInt32;                #   outEnd) of the d_model vector
  inputs @14 :List(Operand);
  outputs @15 :List(Operand);
  scratchOffset @16 :UInt64;
  scratchBytes @17 :UInt64;
  weights @18 :List(UInt32);         # indices into Plan.shards
  kv @19 :UInt32;                    # index into Plan.kvSlices (attention)
  vocabBounds @20 :List(UInt32);     # select: the embedding parts' rows
  durationNs @21 :UInt64;
}

struct TransferLink {
  # Plan-level facts about a slot-table transfer that the wire does not need.
  id @0 :UInt32;
  afterOp @1 :UInt32;
  afterTransfer @2 :UInt32;          # previous hop (0xFFFFFFFF: none)
  consumerOp @3 :UInt32;
  payloadBytes @4 :UInt64;
  srcOutput @5 :UInt32;              # which output of afterOp it carries
  consumerInput @6 :UInt32;          # which input of consumerOp it is
}

struct NodeArenas {
  # SRAM offsets of a node's send and receive arenas (the slot table's
  # offsets are relative to them) and the end of all the program uses.
  chip @0 :Transport.ChipId;
  sendBase @1 :UInt64;
  sendBytes @2 :UInt64;
  recvBase @3 :UInt64;
  recvBytes @4 :UInt64;
  end @5 :UInt64;
}

struct Program {
  kind @0 :UInt8;                    # planner::program_kind
  tokens @1 :UInt32;                 # rows per sequence per step
  microBatches @2 :UInt32;
  microBatchSequences @3 :List(UInt32);
  periodSlots @4 :UInt32;
  ops @5 :List(Op);
  transferLinks @6 :List(TransferLink);
  slotTable @7 :Transport.SlotTable;
  arenas @8 :List(NodeArenas);       # nodes that use any
}

struct ChipUsage {
  chip @0 :Transport.ChipId;
  weightBytes @1 :UInt64;
  kvBytes @2 :UInt64;
  decodeBytes @3 :UInt64;
  prefillBytes @4 :UInt64;
}

struct Predictions {
  tokenLatencyUs @0 :Float64;
  tokensPerSPerUser @1 :Float64;
  aggregateTokensPerS @2 :Float64;
  ttftMs @3 :Float64;
  ttftPromptTokens @4 :UInt32;
  lowerBoundTokenLatencyUs @5 :Float64;
  linkUtilisation @6 :Float64;
  sramUtilisation @7 :Float64;
}

struct Plan {
  formatVersion @0 :UInt32;
  plannerVersion @1 :UInt32;
  determinismRuleVersion @2 :UInt32;
  model @3 :Text;
  modelSpecJson @4 :Text;
  cluster @5 :Text;
  batch @6 :UInt32;
  context @7 :UInt32;
  tpDegree @8 :UInt32;
  layersPerGroup @9 :UInt32;
  failedChips @10 :List(Transport.ChipId);
  shards @11 :List(Shard);
  kvSlices @12 :List(KvSlice);
  decode @13 :Program;
  prefill @14 :Program;
  planHash @15 :Text;
  spares @16 :List(Transport.ChipId);      # spares the plan keeps free
  groupChips @17 :List(Transport.ChipId);  # [group][tpDegree]
  embedChips @18 :List(Transport.ChipId);
  headChips @19 :List(Transport.ChipId);
  sampler @20 :Transport.ChipId;           # the head host's endpoint
  usage @21 :List(ChipUsage);              # nodes with anything on them
  predicted @22 :Predictions;
  incremental @23 :Bool;                   # failures handled by re-plan
  alignedSplits @24 :Bool;                 # MLP parts on canonical tree nodes
  slotNs @25 :UInt64;
}
