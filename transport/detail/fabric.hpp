#pragma once

// RAII wrappers for the libfabric objects the transport uses, and the one
// place where libfabric return codes become `caf::error`s. Every wrapper owns
// exactly one fid and closes it on destruction; errors name the failed call
// and carry fi_strerror's text.
//
// Thread-safety: none; a fabric_context is used by one thread.

#include "transport/errc.hpp"

#include <rdma/fabric.h>
#include <rdma/fi_cm.h>
#include <rdma/fi_domain.h>
#include <rdma/fi_endpoint.h>
#include <rdma/fi_errno.h>
#include <rdma/fi_rma.h>

#include <caf/expected.hpp>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace lockstep::transport::detail {

/// "fi_write to h1 (link 3): Resource temporarily unavailable (-11)".
caf::error fabric_error(std::string_view call, int ret,
                        std::string_view what = {});

/// Closes any fid; null-safe.
struct fid_closer {
  void operator()(fid* f) const noexcept;
};

/// Owns one fid of type T (fid_fabric, fid_domain, ...).
template <class T>
class unique_fid {
public:
  unique_fid() = default;
  explicit unique_fid(T* p)
      : p_(p) {}
  unique_fid(unique_fid&& o) noexcept
      : p_(o.p_) {
    o.p_ = nullptr;
  }
  unique_fid& operator=(unique_fid&& o) noexcept {
    if (this != &o) {
      reset();
      p_ = o.p_;
      o.p_ = nullptr;
    }
    return *this;
  }
  unique_fid(const unique_fid&) = delete;
  unique_fid& operator=(const unique_fid&) = delete;
  ~unique_fid() { reset(); }
  void reset() {
    if (p_ != nullptr)
      fid_closer{}(&p_->fid);
    p_ = nullptr;
  }
  T* get() const { return p_; }
  explicit operator bool() const { return p_ != nullptr; }

private:
  T* p_ = nullptr;
};

/// Owns an fi_info list.
struct info_deleter {
  void operator()(fi_info* i) const noexcept { fi_freeinfo(i); }
};
using info_ptr = std::unique_ptr<fi_info, info_deleter>;

/// Page-aligned, zeroed anonymous memory (mmap); registrable by any provider.
class mapped_buffer {
public:
  mapped_buffer() = default;
  static caf::expected<mapped_buffer> allocate(size_t bytes);
  mapped_buffer(mapped_buffer&& o) noexcept;
  mapped_buffer& operator=(mapped_buffer&& o) noexcept;
  mapped_buffer(const mapped_buffer&) = delete;
  mapped_buffer& operator=(const mapped_buffer&) = delete;
  ~mapped_buffer();
  std::byte* data() const { return data_; }
  size_t size() const { return size_; }

private:
  std::byte* data_ = nullptr;
  size_t size_ = 0;
  size_t mapped_ = 0;
};

/// A registered memory region. Counts live registrations process-wide so
/// tests can prove teardown leaks none.
class memory_region {
public:
  memory_region() = default;
  memory_region(memory_region&&) noexcept = default;
  memory_region& operator=(memory_region&& other) noexcept;
  ~memory_region();
  void* desc() const { return desc_; }
  uint64_t key() const { return key_; }
  explicit operator bool() const { return static_cast<bool>(mr_); }

  /// Live registrations of this process (all memory_regions not destroyed).
  static int64_t live_count();

private:
  friend class fabric_context;
  unique_fid<fid_mr> mr_;
  void* desc_ = nullptr;
  uint64_t key_ = 0;
  bool counted_ = false;
};

/// The fabric, domain, address vector, completion queue and RDM endpoint of
/// one host process, opened for RMA writes with remote CQ data.
class fabric_context {
public:
  /// Opens the provider named `provider` ("shm", "tcp;ofi_rxm", ...) with a
  /// completion queue of `cq_entries` (the caller sizes it from the
  /// completions that can be outstanding at once: a CQ that overruns loses
  /// arrivals).
  static caf::expected<std::unique_ptr<fabric_context>>
  open(const std::string& provider, size_t cq_entries);

  ~fabric_context();

  /// Registers [base, base+bytes) for `access` (FI_WRITE, FI_REMOTE_WRITE).
  /// `requested_key` is used when the provider lets the user pick keys.
  caf::expected<memory_region> register_memory(void* base, size_t bytes,
                                               uint64_t access,
                                               uint64_t requested_key);

  /// This endpoint's address (fi_getname).
  caf::expected<std::vector<std::byte>> local_address() const;

  /// Inserts peer addresses in order; result[i] is the fi_addr of addrs[i].
  caf::expected<std::vector<fi_addr_t>>
  insert_addresses(const std::vector<std::vector<std::byte>>& addrs);

  /// True when remote addresses are virtual (FI_MR_VIRT_ADDR), false when
  /// they are offsets into the registration.
  bool virtual_addressing() const { return virt_addr_; }
  /// True when local buffers need a registration descriptor (FI_MR_LOCAL).
  bool local_mr() const { return local_mr_; }
  /// The provider libfabric actually picked (e.g. "shm", "tcp;ofi_rxm").
  const std::string& provider_name() const { return provider_name_; }
  size_t inject_size() const { return inject_size_; }

  /// The completion queue's file descriptor when the provider gave it one
  /// (FI_WAIT_FD: tcp;ofi_rxm), else -1 (shm 1.17 refuses FI_WAIT_FD with
  /// -FI_ENOSYS; its only wait object, FI_WAIT_YIELD, spins).
  int wait_fd() const { return wait_fd_; }
  /// fi_trywait on the CQ: true when nothing is pending, so blocking on
  /// wait_fd() cannot miss a completion (it also drives progress once).
  /// Only meaningful when wait_fd() >= 0.
  bool ready_to_block() const;

  fid_ep* ep() const { return ep_.get(); }
  fid_cq* cq() const { return cq_.get(); }

private:
  fabric_context() = default;
  info_ptr info_;
  unique_fid<fid_fabric> fabric_;
  unique_fid<fid_domain> domain_;
  unique_fid<fid_av> av_;
  unique_fid<fid_cq> cq_;
  unique_fid<fid_ep> ep_;
  bool virt_addr_ = false;
  bool local_mr_ = false;
  bool prov_key_ = false;
  bool mr_endpoint_ = false;
  size_t inject_size_ = 0;
  int wait_fd_ = -1; // owned by the CQ, closed with it
  std::string provider_name_;
};

} // namespace lockstep::transport::detail
