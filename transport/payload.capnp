@0xb01f03a1fd3010d2;
# The fixed framing of every tensor transfer. A transfer of `bytes` bytes is
# one single-segment Cap'n Proto message: an 8-byte segment table, the root
# pointer, an empty struct section and a Data list of `bytes - 24` payload
# bytes. The sender lays it out once in its registered send arena when the
# plan loads; each step writes only the payload bytes. The receiver reads it
# in place with a FlatArrayMessageReader over its receive arena.

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("lockstep::transport::schema");

struct TensorPayload {
  data @0 :Data;
}
