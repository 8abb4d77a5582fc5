#include "transport/detail/fabric.hpp"

#include <sys/mman.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <mutex>

namespace lockstep::transport::detail {

namespace {

std::atomic<int64_t> live_registrations{0};

// FI_VERSION we program against: 1.9 is the first with the mr_mode bits we
// request; 1.17 is installed.
constexpr uint32_t api_version = FI_VERSION(1, 9);

// shm names its segments "/dev/shm/<pid>:<ep>:<n>" and, finding one that
// exists, keeps it if the pid recorded inside is alive. A process that
// reuses the pid of a host that died without teardown finds *itself*
// alive and fails fi_enable with EBUSY. Before this process opens its first
// endpoint no segment can be its own, so any with its pid is stale.
void remove_stale_shm_segments() {
  static std::once_flag once;
  std::call_once(once, [] {
    auto prefix = std::to_string(getpid()) + ":";
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator("/dev/shm", ec))
      if (e.path().filename().string().rfind(prefix, 0) == 0)
        std::filesystem::remove(e.path(), ec);
  });
}

} // namespace

caf::error fabric_error(std::string_view call, int ret, std::string_view what) {
  std::string msg{call};
  if (!what.empty()) {
    msg += " (";
    msg += what;
    msg += ")";
  }
  msg += ": ";
  msg += fi_strerror(ret < 0 ? -ret : ret);
  msg += " (" + std::to_string(ret) + ")";
  return caf::make_error(errc::fabric_failure, std::move(msg));
}

void fid_closer::operator()(fid* f) const noexcept {
  if (f != nullptr)
    fi_close(f);
}

// --- mapped_buffer ----------------------------------------------------------

caf::expected<mapped_buffer> mapped_buffer::allocate(size_t bytes) {
  mapped_buffer out;
  auto page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  size_t len = bytes == 0 ? page : (bytes + page - 1) / page * page;
  void* p = mmap(nullptr, len, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED)
    return caf::make_error(
        errc::fabric_failure,
        "mmap of " + std::to_string(len) +
            " bytes for an arena failed: " + std::strerror(errno));
  out.data_ = static_cast<std::byte*>(p);
  out.size_ = bytes;
  out.mapped_ = len;
  return out;
}

mapped_buffer::mapped_buffer(mapped_buffer&& o) noexcept
    : data_(o.data_)
    , size_(o.size_)
    , mapped_(o.mapped_) {
  o.data_ = nullptr;
  o.size_ = o.mapped_ = 0;
}

mapped_buffer& mapped_buffer::operator=(mapped_buffer&& o) noexcept {
  if (this != &o) {
    if (data_ != nullptr)
      munmap(data_, mapped_);
    data_ = o.data_;
    size_ = o.size_;
    mapped_ = o.mapped_;
    o.data_ = nullptr;
    o.size_ = o.mapped_ = 0;
  }
  return *this;
}

mapped_buffer::~mapped_buffer() {
  if (data_ != nullptr)
    munmap(data_, mapped_);
}

// --- memory_region ----------------------------------------------------------

memory_region::~memory_region() {
  if (counted_ && mr_)
    --live_registrations;
}

memory_region& memory_region::operator=(memory_region&& other) noexcept {
  if (this != &other) {
    if (counted_ && mr_)
      --live_registrations; // the registration we held closes now
    mr_ = std::move(other.mr_);
    desc_ = other.desc_;
    key_ = other.key_;
    counted_ = other.counted_;
    other.counted_ = false;
  }
  return *this;
}

int64_t memory_region::live_count() {
  return live_registrations.load();
}

// --- fabric_context ---------------------------------------------------------

caf::expected<std::unique_ptr<fabric_context>>
fabric_context::open(const std::string& provider, size_t cq_entries) {
  remove_stale_shm_segments();
  std::unique_ptr<fabric_context> ctx{new fabric_context};
  info_ptr hints{fi_allocinfo()};
  if (!hints)
    return caf::make_error(errc::fabric_failure, "fi_allocinfo failed");
  hints->ep_attr->type = FI_EP_RDM;
  // One-sided writes with remote CQ data; nothing else.
  hints->caps = FI_RMA | FI_WRITE | FI_REMOTE_WRITE;
  // We accept any MR mode a provider may impose and read back what it chose.
  hints->domain_attr->mr_mode = FI_MR_LOCAL | FI_MR_VIRT_ADDR |
                                FI_MR_ALLOCATED | FI_MR_PROV_KEY |
                                FI_MR_ENDPOINT;
  hints->domain_attr->threading = FI_THREAD_DOMAIN;
  hints->domain_attr->av_type = FI_AV_TABLE;
  hints->mode = 0; // we do not post receive buffers for CQ data
  hints->fabric_attr->prov_name = strdup(provider.c_str());
  fi_info* raw = nullptr;
  if (int ret = fi_getinfo(api_version, nullptr, nullptr, 0, hints.get(), &raw);
      ret != 0)
    return fabric_error("fi_getinfo", ret, "provider " + provider);
  ctx->info_.reset(raw);
  fi_info* info = raw;
  if (info->domain_attr->cq_data_size < 8)
    return caf::make_error(errc::fabric_failure,
                           "provider " + provider + " offers only " +
                               std::to_string(info->domain_attr->cq_data_size) +
                               " bytes of remote CQ data; 8 are needed");
  auto mr_mode = info->domain_attr->mr_mode;
  ctx->virt_addr_ = (mr_mode & FI_MR_VIRT_ADDR) != 0;
  ctx->local_mr_ = (mr_mode & FI_MR_LOCAL) != 0;
  ctx->prov_key_ = (mr_mode & FI_MR_PROV_KEY) != 0;
  ctx->mr_endpoint_ = (mr_mode & FI_MR_ENDPOINT) != 0;
  ctx->inject_size_ = info->tx_attr->inject_size;
  ctx->provider_name_ = info->fabric_attr->prov_name;

  fid_fabric* fab = nullptr;
  if (int ret = fi_fabric(info->fabric_attr, &fab, nullptr); ret != 0)
    return fabric_error("fi_fabric", ret, provider);
  ctx->fabric_ = unique_fid<fid_fabric>{fab};
  fid_domain* dom = nullptr;
  if (int ret = fi_domain(fab, info, &dom, nullptr); ret != 0)
    return fabric_error("fi_domain", ret, provider);
  ctx->domain_ = unique_fid<fid_domain>{dom};

  fi_av_attr av_attr{};
  av_attr.type = FI_AV_TABLE;
  fid_av* av = nullptr;
  if (int ret = fi_av_open(dom, &av_attr, &av, nullptr); ret != 0)
    return fabric_error("fi_av_open", ret, provider);
  ctx->av_ = unique_fid<fid_av>{av};

  // A file descriptor to block on lets an idle progress thread sleep in
  // the kernel until a peer's write arrives (no polling, no spinning). Where
  // the provider has none (shm 1.17: -FI_ENOSYS) we poll the CQ and back off
  // between polls (detail/progress_waiter.hpp).
  fi_cq_attr cq_attr{};
  cq_attr.format = FI_CQ_FORMAT_DATA;
  cq_attr.wait_obj = FI_WAIT_FD;
  cq_attr.size = cq_entries;
  fid_cq* cq = nullptr;
  if (int ret = fi_cq_open(dom, &cq_attr, &cq, nullptr); ret != 0) {
    cq_attr.wait_obj = FI_WAIT_NONE;
    if (ret = fi_cq_open(dom, &cq_attr, &cq, nullptr); ret != 0)
      return fabric_error("fi_cq_open", ret,
                          provider + ", " + std::to_string(cq_entries) +
                              " entries");
  }
  ctx->cq_ = unique_fid<fid_cq>{cq};
  if (cq_attr.wait_obj == FI_WAIT_FD) {
    int fd = -1;
    if (int ret = fi_control(&cq->fid, FI_GETWAIT, &fd); ret != 0)
      return fabric_error("fi_control(FI_GETWAIT)", ret, provider);
    ctx->wait_fd_ = fd;
  }

  fid_ep* ep = nullptr;
  if (int ret = fi_endpoint(dom, info, &ep, nullptr); ret != 0)
    return fabric_error("fi_endpoint", ret, provider);
  ctx->ep_ = unique_fid<fid_ep>{ep};
  if (int ret = fi_ep_bind(ep, &av->fid, 0); ret != 0)
    return fabric_error("fi_ep_bind(av)", ret, provider);
  if (int ret = fi_ep_bind(ep, &cq->fid, FI_TRANSMIT | FI_RECV); ret != 0)
    return fabric_error("fi_ep_bind(cq)", ret, provider);
  if (int ret = fi_enable(ep); ret != 0)
    return fabric_error("fi_enable", ret, provider);
  return ctx;
}

fabric_context::~fabric_context() = default;

bool fabric_context::ready_to_block() const {
  fid* f = &cq_.get()->fid;
  return fi_trywait(fabric_.get(), &f, 1) == FI_SUCCESS;
}

caf::expected<memory_region>
fabric_context::register_memory(void* base, size_t bytes, uint64_t access,
                                uint64_t requested_key) {
  memory_region out;
  fid_mr* mr = nullptr;
  if (int ret = fi_mr_reg(domain_.get(), base, bytes, access, 0,
                          prov_key_ ? 0 : requested_key, 0, &mr, nullptr);
      ret != 0)
    return fabric_error("fi_mr_reg", ret, std::to_string(bytes) + " bytes");
  out.mr_ = unique_fid<fid_mr>{mr};
  if (mr_endpoint_) {
    if (int ret = fi_mr_bind(mr, &ep_.get()->fid, 0); ret != 0)
      return fabric_error("fi_mr_bind", ret);
    if (int ret = fi_mr_enable(mr); ret != 0)
      return fabric_error("fi_mr_enable", ret);
  }
  out.desc_ = fi_mr_desc(mr);
  out.key_ = fi_mr_key(mr);
  if (out.key_ == FI_KEY_NOTAVAIL)
    return caf::make_error(errc::fabric_failure,
                           "fi_mr_key: key not available (raw keys are not "
                           "supported)");
  out.counted_ = true;
  ++live_registrations;
  return out;
}

caf::expected<std::vector<std::byte>> fabric_context::local_address() const {
  std::vector<std::byte> addr(256);
  size_t len = addr.size();
  int ret = fi_getname(&ep_.get()->fid, addr.data(), &len);
  if (ret == -FI_ETOOSMALL) {
    addr.resize(len);
    ret = fi_getname(&ep_.get()->fid, addr.data(), &len);
  }
  if (ret != 0)
    return fabric_error("fi_getname", ret);
  addr.resize(len);
  return addr;
}

caf::expected<std::vector<fi_addr_t>> fabric_context::insert_addresses(
    const std::vector<std::vector<std::byte>>& addrs) {
  std::vector<fi_addr_t> out(addrs.size(), FI_ADDR_NOTAVAIL);
  for (size_t i = 0; i < addrs.size(); ++i) {
    int ret = fi_av_insert(av_.get(), addrs[i].data(), 1, &out[i], 0, nullptr);
    if (ret != 1)
      return caf::make_error(
          errc::peer_unreachable,
          "fi_av_insert of host " + std::to_string(i) +
              "'s address failed: " + fi_strerror(ret < 0 ? -ret : FI_EINVAL));
  }
  return out;
}

} // namespace lockstep::transport::detail
