#include "io/atomic_file.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <system_error>

#include "io/mapping_guard.h"

namespace moerun {
namespace {

std::string ErrnoMessage(int err) { return std::error_code(err, std::generic_category()).message(); }

// Writes all of `bytes` to `f`, flushes stdio and the kernel's page cache. Returns errno or 0.
int WriteAndSync(std::FILE* f, std::string_view bytes) {
  if (!bytes.empty() && std::fwrite(bytes.data(), 1, bytes.size(), f) != bytes.size()) {
    return errno != 0 ? errno : EIO;
  }
  if (std::fflush(f) != 0) return errno != 0 ? errno : EIO;
  if (::fsync(::fileno(f)) != 0) return errno;
  return 0;
}

// Best effort: persists the rename itself. Some file systems refuse fsync on a directory.
void SyncParentDirectory(const std::string& path) {
  std::filesystem::path dir = std::filesystem::path(path).parent_path();
  if (dir.empty()) dir = std::filesystem::path(".");
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;
  (void)::fsync(fd);
  ::close(fd);
}

// Reads `fd` (opened from `path`) to EOF or to `limit` bytes, whichever comes first, reserving for
// min(limit, expected) (`expected`: the size the caller's fstat gave); with `more`, also says
// whether bytes remain past the limit. Errors name the path and the bytes read so far.
StatusOr<std::string> ReadUpTo(int fd, const std::string& path, uint64_t limit, uint64_t expected,
                               bool* more) {
  std::string out;
  out.reserve(static_cast<size_t>(std::min(limit, expected)));
  char buf[1 << 16];
  while (true) {
    const uint64_t room = limit - out.size();
    const uint64_t want = room >= sizeof buf ? sizeof buf : room + (more != nullptr ? 1 : 0);
    if (want == 0) break;
    const ssize_t n = ::read(fd, buf, want);
    if (n == 0) break;
    if (n < 0) {
      if (errno == EINTR) continue;
      return IOError("{}: read failed after {} bytes: {}", path, out.size(), ErrnoMessage(errno));
    }
    const uint64_t keep = std::min<uint64_t>(static_cast<uint64_t>(n), room);
    out.append(buf, static_cast<size_t>(keep));
    if (keep < static_cast<uint64_t>(n)) {
      *more = true;
      break;
    }
  }
  return out;
}

}  // namespace

int RemoveStaleTemporaries(const std::string& path) {
  namespace fs = std::filesystem;
  const fs::path p(path);
  const std::string prefix = p.filename().string() + ".tmp.";
  std::error_code ec;
  int removed = 0;
  for (const auto& e :
       fs::directory_iterator(p.parent_path().empty() ? fs::path(".") : p.parent_path(), ec)) {
    const std::string name = e.path().filename().string();
    if (name.size() <= prefix.size() || name.compare(0, prefix.size(), prefix) != 0) continue;
    const std::string pid_text = name.substr(prefix.size());
    if (pid_text.find_first_not_of("0123456789") != std::string::npos || pid_text.size() > 9) continue;
    const pid_t pid = static_cast<pid_t>(std::stol(pid_text));
    if (pid == ::getpid() || ::kill(pid, 0) == 0 || errno != ESRCH) continue;  // alive (or not ours to judge)
    removed += fs::remove(e.path(), ec) ? 1 : 0;
  }
  return removed;
}

Status CheckWritable(const std::string& path) {
  RemoveStaleTemporaries(path);
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) {
    return IOError("cannot write '{}': cannot create '{}': {}", path, tmp, ErrnoMessage(errno));
  }
  ::close(fd);
  ::unlink(tmp.c_str());
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode))
    return IOError("cannot write '{}': is a directory", path);
  return Status::Ok();
}

Status WriteFileAtomically(const std::string& path, std::string_view bytes) {
  RemoveStaleTemporaries(path);
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  errno = 0;
  std::FILE* f = std::fopen(tmp.c_str(), "wbe");  // 'e': O_CLOEXEC
  if (f == nullptr) {
    return IOError("cannot write '{}': cannot create temporary file '{}': {}", path, tmp,
                   ErrnoMessage(errno));
  }
  errno = 0;
  int err = WriteAndSync(f, bytes);
  if (std::fclose(f) != 0 && err == 0) err = errno != 0 ? errno : EIO;
  if (err != 0) {
    std::remove(tmp.c_str());
    return IOError("cannot write '{}' ({} bytes to '{}'): {}", path, bytes.size(), tmp, ErrnoMessage(err));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    err = errno;
    std::remove(tmp.c_str());
    return IOError("cannot write '{}': rename from '{}' failed: {}", path, tmp, ErrnoMessage(err));
  }
  SyncParentDirectory(path);
  return Status::Ok();
}

StatusOr<int> OpenReadOnly(const std::string& path) {
  // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer, forever.
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    const int err = errno;
    if (err == ENOENT) return NotFound("{}: no such file", path);
    return IOError("{}: cannot open: {}", path, ErrnoMessage(err));
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    return IOError("{}: cannot stat: {}", path, ErrnoMessage(err));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    if (S_ISDIR(st.st_mode)) return IOError("{}: is a directory", path);
    return InvalidArgument("{}: not a regular file (a FIFO, device or socket is never read)", path);
  }
  (void)::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) & ~O_NONBLOCK);
  return fd;
}

StatusOr<std::string> ReadFileToString(const std::string& path, uint64_t max_bytes) {
  ASSIGN_OR_RETURN(const int fd, OpenReadOnly(path));
  struct stat st {};
  if (::fstat(fd, &st) == 0 && static_cast<uint64_t>(st.st_size) > max_bytes) {
    ::close(fd);
    return InvalidArgument("{}: {} bytes, more than the {} bytes a text file may have", path,
                           static_cast<uint64_t>(st.st_size), max_bytes);
  }
  // Read to EOF rather than trusting st_size (/proc files, concurrent appends), up to the bound.
  bool more = false;
  StatusOr<std::string> out = ReadUpTo(fd, path, max_bytes, static_cast<uint64_t>(st.st_size), &more);
  ::close(fd);
  if (out.ok() && more) {
    return InvalidArgument("{}: grew past the {} bytes a text file may have while being read", path,
                           max_bytes);
  }
  return out;
}

StatusOr<std::string> ReadFilePrefix(const std::string& path, uint64_t n) {
  ASSIGN_OR_RETURN(const int fd, OpenReadOnly(path));
  struct stat st {};
  const uint64_t size = ::fstat(fd, &st) == 0 ? static_cast<uint64_t>(st.st_size) : 0;
  StatusOr<std::string> out = ReadUpTo(fd, path, n, size, nullptr);
  ::close(fd);
  return out;
}

StatusOr<ReadOnlyMapping> MapReadOnly(const std::string& path) {
  ASSIGN_OR_RETURN(const int fd, OpenReadOnly(path));  // a regular file
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    return IOError("{}: cannot stat: {}", path, ErrnoMessage(err));
  }
  ReadOnlyMapping m;
  m.size = static_cast<uint64_t>(st.st_size);
  if (m.size > 0) {
    void* p = ::mmap(nullptr, m.size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      const int err = errno;
      ::close(fd);
      return IOError("{}: cannot mmap {} bytes: {}", path, m.size, ErrnoMessage(err));
    }
    m.addr = p;
    RegisterMapping(p, m.size, path);
  }
  ::close(fd);  // the mapping stays valid
  return m;
}

void UnmapReadOnly(void* addr, uint64_t size) {
  if (addr == nullptr) return;
  UnregisterMapping(addr);
  ::munmap(addr, size);
}

}  // namespace moerun
