#include "tools/bandwidth_probe.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "comm/mpi_comm.h"
#include "kernels/read_bandwidth.h"

namespace moerun {

double PeakRssBytes() {
  std::FILE* f = std::fopen("/proc/self/status", "r");
  if (f == nullptr) return 0;
  char line[256];
  double kb = 0;
  while (std::fgets(line, sizeof line, f) != nullptr) {
    if (std::strncmp(line, "VmHWM:", 6) == 0) kb = std::atof(line + 6);
  }
  std::fclose(f);
  return kb * 1024.0;
}

void ResetPeakRss() {
  if (std::FILE* f = std::fopen("/proc/self/clear_refs", "w")) {
    std::fputs("5", f);
    std::fclose(f);
  }
}

StatusOr<double> BandwidthProbe::Now(Communicator& world) {
  CollectiveLabel label(world.log(), "read-bandwidth probe");
  float gbs = 0;
  RETURN_IF_ERROR(world.AllReduce(&gbs, 1, ReduceType::kF32Sum));  // everyone is here
  if (StartedByMpirun() || world.rank() == 0) {                    // one probe per process
    peak_rss_ = std::max(peak_rss_, PeakRssBytes());
    gbs = static_cast<float>(MeasureReadBandwidth(&pool_));
    ResetPeakRss();
  }
  RETURN_IF_ERROR(world.AllReduce(&gbs, 1, ReduceType::kF32Sum));  // the processes' sum, on every rank
  if (world.rank() == 0) all_.push_back(gbs);
  return gbs;
}

double BandwidthProbe::peak_rss() const { return std::max(peak_rss_, PeakRssBytes()); }

}  // namespace moerun
