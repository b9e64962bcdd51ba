#include "io/atomic_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <system_error>

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

}  // namespace

Status WriteFileAtomically(const std::string& path, std::string_view bytes) {
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
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    if (err == ENOENT) return NotFound("{}: no such file", path);
    return IOError("{}: cannot open: {}", path, ErrnoMessage(err));
  }
  return fd;
}

StatusOr<std::string> ReadFileToString(const std::string& path) {
  ASSIGN_OR_RETURN(const int fd, OpenReadOnly(path));
  struct stat st {};
  const bool have_stat = ::fstat(fd, &st) == 0;
  if (have_stat && S_ISDIR(st.st_mode)) {
    ::close(fd);
    return IOError("{}: is a directory", path);
  }
  // Read to EOF rather than trusting st_size (pipes, /proc files, concurrent appends).
  std::string out;
  if (have_stat && S_ISREG(st.st_mode)) out.reserve(static_cast<size_t>(st.st_size));
  char buf[1 << 16];
  while (true) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n == 0) break;
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      ::close(fd);
      return IOError("{}: read failed after {} bytes: {}", path, out.size(), ErrnoMessage(err));
    }
    out.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return out;
}

StatusOr<ReadOnlyMapping> MapReadOnly(const std::string& path) {
  ASSIGN_OR_RETURN(const int fd, OpenReadOnly(path));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    return IOError("{}: cannot stat: {}", path, ErrnoMessage(err));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return InvalidArgument("{}: not a regular file", path);
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
  }
  ::close(fd);  // the mapping stays valid
  return m;
}

}  // namespace moerun
