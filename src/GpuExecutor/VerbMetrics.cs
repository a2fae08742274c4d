using GpuExecutor.Composition;
using GpuExecutor.Configuration;
using GpuExecutor.Metrics;

namespace GpuExecutor;

/// <summary>Counts one finished verb call in the host's metrics, and rewrites the textfile after the verbs that change what it shows.</summary>
public static class VerbMetrics
{
    /// <summary>
    /// prepare takes GPUs and fills the cache, and cleanup and gc free them (`metrics` writes
    /// the file itself). `run` is left out: its latency is every stage's, and the sampler and the
    /// agent rewrite the file while a job runs.
    /// </summary>
    private static readonly HashSet<string> RewritingVerbs = ["prepare", "cleanup", "gc"];

    public static async Task RecordAsync(ExecutorConfig config, CompositionRoot adapters, string verb, Exception? failure)
    {
        if (config.Metrics.TextfileDir is null)
            return;
        // The first call with metrics on starts the host's counters; from then on every process counts.
        MetricCounters.StartKeepingAndAdd(config.StateDir, (MetricSeries.Of(HostMetrics.VerbCalls, ("verb", verb), ("outcome", ExitCodes.OutcomeName(failure))), 1));
        if (RewritingVerbs.Contains(verb))
            await adapters.Metrics.TryWriteAsync();
    }
}
