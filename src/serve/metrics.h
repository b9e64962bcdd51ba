// ServerMetrics: the Prometheus series of `moerun serve` (GET /metrics, text format 0.0.4, built
// with Debian's prometheus-cpp). vLLM-style serving series plus MoE series no peer exports:
//   moerun_requests_total{endpoint,code}        finished HTTP generation requests
//   moerun_prompt_tokens_total / moerun_generation_tokens_total
//   moerun_requests_running / moerun_requests_waiting      (engine load at scrape time)
//   moerun_time_to_first_token_seconds, moerun_inter_token_latency_seconds,
//   moerun_e2e_request_latency_seconds                    histograms
//   moerun_kv_cache_blocks_used / moerun_kv_cache_blocks_total, moerun_prefix_cache_queries_total /
//   moerun_prefix_cache_hits_total (tokens)                (engine KV pool at scrape time)
//   moerun_moe_expert_tokens_total{layer,expert}  tokens routed to each expert (rank 0's view)
//   moerun_collective_seconds_total{op}           time in each collective kind on rank 0
// Thread safety: every method may be called from any thread (prometheus-cpp metrics are atomic;
// the gauges are set under the scrape).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace prometheus {
class Registry;
class Counter;
class Gauge;
class Histogram;
template <typename T>
class Family;
}  // namespace prometheus

namespace moerun {

// What the engine side reports at scrape time.
struct EngineSnapshot {
  int64_t running = 0, waiting = 0;
  int64_t kv_blocks_used = 0, kv_blocks_total = 0;
  uint64_t prefix_queries = 0, prefix_hits = 0;      // prompt tokens looked up / reused
  std::vector<std::vector<uint64_t>> expert_tokens;  // [layer][expert], cumulative
  std::map<std::string, double> collective_seconds;  // op -> cumulative seconds
};

class ServerMetrics {
 public:
  ServerMetrics();
  ~ServerMetrics();

  void RequestFinished(const std::string& endpoint, int http_status);
  void Tokens(int64_t prompt, int64_t generated);
  void TimeToFirstToken(double seconds);
  void InterTokenLatency(double seconds);
  void RequestLatency(double seconds);
  // Prometheus text of every series, with the engine's state taken now.
  std::string Render(const EngineSnapshot& engine);

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Counter>* requests_;
  prometheus::Counter *prompt_tokens_, *generation_tokens_;
  prometheus::Gauge *running_, *waiting_, *kv_used_, *kv_total_, *prefix_queries_, *prefix_hits_;
  prometheus::Histogram *ttft_, *itl_, *e2e_;
  prometheus::Family<prometheus::Gauge>* expert_tokens_;
  prometheus::Family<prometheus::Gauge>* collective_seconds_;
};

}  // namespace moerun
