#include "serve/metrics.h"

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

namespace moerun {

namespace {

prometheus::Histogram::BucketBoundaries LatencyBuckets() {
  return {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1,  0.25, 0.5,
          0.75,  1.0,    2.5,   5.0,  7.5,   10.0, 20.0,  40.0, 80.0};
}

}  // namespace

ServerMetrics::ServerMetrics() : registry_(std::make_shared<prometheus::Registry>()) {
  using prometheus::BuildCounter;
  using prometheus::BuildGauge;
  using prometheus::BuildHistogram;
  requests_ = &BuildCounter()
                   .Name("moerun_requests_total")
                   .Help("Finished HTTP generation requests")
                   .Register(*registry_);
  prompt_tokens_ = &BuildCounter()
                        .Name("moerun_prompt_tokens_total")
                        .Help("Prompt tokens of finished requests")
                        .Register(*registry_)
                        .Add({});
  generation_tokens_ = &BuildCounter()
                            .Name("moerun_generation_tokens_total")
                            .Help("Generated tokens of finished requests")
                            .Register(*registry_)
                            .Add({});
  auto gauge = [&](const char* name, const char* help) {
    return &BuildGauge().Name(name).Help(help).Register(*registry_).Add({});
  };
  running_ = gauge("moerun_requests_running", "Sequences running in the engine");
  waiting_ = gauge("moerun_requests_waiting", "Sequences queued for admission");
  kv_used_ = gauge("moerun_kv_cache_blocks_used", "KV cache blocks held by sequences or the prefix cache");
  kv_total_ = gauge("moerun_kv_cache_blocks_total", "KV cache blocks in the pool");
  prefix_queries_ = gauge("moerun_prefix_cache_queries_total", "Prompt tokens looked up in the prefix cache");
  prefix_hits_ = gauge("moerun_prefix_cache_hits_total", "Prompt tokens served from the prefix cache");
  auto histogram = [&](const char* name, const char* help) {
    return &BuildHistogram().Name(name).Help(help).Register(*registry_).Add({}, LatencyBuckets());
  };
  ttft_ = histogram("moerun_time_to_first_token_seconds", "Time from request arrival to its first token");
  itl_ = histogram("moerun_inter_token_latency_seconds", "Time between consecutive tokens of a sequence");
  e2e_ = histogram("moerun_e2e_request_latency_seconds", "Time from request arrival to its last token");
  expert_tokens_ = &BuildGauge()
                        .Name("moerun_moe_expert_tokens_total")
                        .Help("Tokens routed to each expert of each MoE layer (counted on world rank 0)")
                        .Register(*registry_);
  collective_seconds_ = &BuildGauge()
                             .Name("moerun_collective_seconds_total")
                             .Help("Seconds world rank 0 spent in each kind of collective")
                             .Register(*registry_);
}

ServerMetrics::~ServerMetrics() = default;

void ServerMetrics::RequestFinished(const std::string& endpoint, int http_status) {
  requests_->Add({{"endpoint", endpoint}, {"code", std::to_string(http_status)}}).Increment();
}

void ServerMetrics::Tokens(int64_t prompt, int64_t generated) {
  prompt_tokens_->Increment(static_cast<double>(prompt));
  generation_tokens_->Increment(static_cast<double>(generated));
}

void ServerMetrics::TimeToFirstToken(double s) { ttft_->Observe(s); }
void ServerMetrics::InterTokenLatency(double s) { itl_->Observe(s); }
void ServerMetrics::RequestLatency(double s) { e2e_->Observe(s); }

std::string ServerMetrics::Render(const EngineSnapshot& e) {
  running_->Set(static_cast<double>(e.running));
  waiting_->Set(static_cast<double>(e.waiting));
  kv_used_->Set(static_cast<double>(e.kv_blocks_used));
  kv_total_->Set(static_cast<double>(e.kv_blocks_total));
  prefix_queries_->Set(static_cast<double>(e.prefix_queries));
  prefix_hits_->Set(static_cast<double>(e.prefix_hits));
  for (size_t l = 0; l < e.expert_tokens.size(); ++l) {
    for (size_t x = 0; x < e.expert_tokens[l].size(); ++x) {
      expert_tokens_->Add({{"layer", std::to_string(l)}, {"expert", std::to_string(x)}})
          .Set(static_cast<double>(e.expert_tokens[l][x]));
    }
  }
  for (const auto& [op, seconds] : e.collective_seconds) collective_seconds_->Add({{"op", op}}).Set(seconds);
  return prometheus::TextSerializer().Serialize(registry_->Collect());
}

}  // namespace moerun
