using System.Globalization;
using GpuExecutor.AdminLog;
using GpuExecutor.Composition;
using GpuExecutor.Configuration;
using GpuExecutor.Outcomes;
using GpuExecutor.Protocol;

namespace GpuExecutor.Verbs;

/// <summary>
/// What every verb gets: the config, the adapters, the runner's environment, a log, the stop
/// token, and the facts its admin log line will carry.
/// </summary>
public sealed record VerbContext(ExecutorConfig Config, CompositionRoot Adapters, IRunnerEnvironment Environment, TextWriter Log, CancellationToken Stop, VerbFacts Facts)
{
    /// <summary>
    /// The job a detached process serves (the checkpoint agent, the stream fetcher, the GPU
    /// sampler), from its command line, recorded for its admin log line; and its log, which
    /// stamps each line with the time and the job, since a log file has no job log around it.
    /// </summary>
    public (long JobId, Action<string> Log) DetachedJob(string jobText, string usage)
    {
        if (!long.TryParse(jobText, NumberStyles.None, CultureInfo.InvariantCulture, out var jobId))
            throw new SystemFailureException(usage);
        Facts.JobId = jobId;
        return (jobId, line => Log.WriteLine($"{DateTime.UtcNow:yyyy-MM-ddTHH:mm:ss.fffZ} job {jobId}: {line}"));
    }
}
