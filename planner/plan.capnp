@0xfdce8c48b8d80e2a;
# A compiled plan: placement, per-chip compute program and, as its per-link
# part, exactly the transport's slot table. Cached in RocksDB (column
# `plans`) under the plan hash.

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("lockstep::planner::schema");

using Transport = import "/transport/slot_table.capnp";

const planFormatVersion :UInt32 = 1;

struct Shard {
  chip @0 :Transport.ChipId;
  layer @1 :UInt32;        # 0xFFFF for global tensors
  tensor @2 :UInt8;        # model::tensor_kind
  rowBegin @3 :UInt32;
  rowEnd @4 :UInt32;
  colBegin @5 :UInt32;
  colEnd @6 :UInt32;
  bytes @7 :UInt64;
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

struct Op {
  id @0 :UInt32;
  kind @1 :UInt8;          # planner::op_kind
  chip @2 :Transport.ChipId;
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
}

struct TransferLink {
  # Plan-level facts about a slot-table transfer that the wire does not need.
  id @0 :UInt32;
  afterOp @1 :UInt32;
  afterTransfer @2 :UInt32;          # previous hop (0xFFFFFFFF: none)
  consumerOp @3 :UInt32;
  payloadBytes @4 :UInt64;
}

struct ChipUsage {
  chip @0 :Transport.ChipId;
  weightBytes @1 :UInt64;
  kvBytes @2 :UInt64;
  recvArenaBytes @3 :UInt64;
  sendArenaBytes @4 :UInt64;
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
  microBatches @8 :UInt32;
  tpDegree @9 :UInt32;
  layersPerGroup @10 :UInt32;
  failedChips @11 :List(Transport.ChipId);
  shards @12 :List(Shard);
  ops @13 :List(Op);
  transferLinks @14 :List(TransferLink);
  slotTable @15 :Transport.SlotTable;
  planHash @16 :Text;
  spares @17 :List(Transport.ChipId);      # spares the plan keeps free
  groupChips @18 :List(Transport.ChipId);  # [group][tpDegree]
  embedChips @19 :List(Transport.ChipId);
  headChips @20 :List(Transport.ChipId);
  usage @21 :List(ChipUsage);              # chips with anything on them
  predicted @22 :Predictions;
  incremental @23 :Bool;                   # failures handled by re-plan
  alignedSplits @24 :Bool;                 # MLP parts on canonical tree nodes
}
