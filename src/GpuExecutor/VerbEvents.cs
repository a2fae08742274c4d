using GpuExecutor.AdminLog;
using GpuExecutor.Configuration;
using GpuExecutor.Outcomes;
using GpuExecutor.Protocol;

namespace GpuExecutor;

/// <summary>Turns one finished verb call into its admin log line (<see cref="EventLog"/>).</summary>
public static class VerbEvents
{
    /// <summary>VmHWM from /proc/self/status; null where there is no such file.</summary>
    private static long? PeakRssKiB()
    {
        try
        {
            foreach (var line in File.ReadLines("/proc/self/status"))
            {
                if (line.StartsWith("VmHWM:", StringComparison.Ordinal)
                    && long.TryParse(line["VmHWM:".Length..].Trim().Split(' ')[0], System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var kib))
                    return kib;
            }
        }
        catch (IOException)
        {
        }
        return null;
    }

    public static void Record(ExecutorConfig config, IRunnerEnvironment environment, string verb, VerbFacts facts, Exception? failure, int exitCode, TimeSpan duration)
    {
        // The payload the verb read, if it read one; else only the job's identity, read cheaply:
        // `config` runs for every job, and deserialising the payload (with JobIdentity's SHA-256
        // run key) cost it 7 ms. Verbs that know the run key report it themselves.
        var payload = facts.Payload;
        var identity = payload is null ? JobPayloadReader.TryReadIdentity(environment) : (payload.Id, payload.JobInfo.ProjectId, payload.JobInfo.ProjectFullPath);
        var redaction = SecretRedaction.For(config, payload);
        EventLog.TryAppend(config.StateDir, new AdminEvent
        {
            Time = DateTimeOffset.UtcNow,
            Version = VersionInfo.Version,
            Host = config.HostName,
            Pid = Environment.ProcessId,
            Verb = verb,
            Job = facts.JobId ?? identity?.JobId,
            Project = identity?.ProjectId,
            ProjectPath = identity?.ProjectPath,
            RunKey = facts.RunKey,
            Stage = facts.Stage,
            DurationMs = (long)duration.TotalMilliseconds,
            PeakRssKiB = PeakRssKiB(),
            CpuMs = (long)System.Diagnostics.Process.GetCurrentProcess().TotalProcessorTime.TotalMilliseconds,
            Outcome = ExitCodes.OutcomeName(failure),
            ExitCode = exitCode,
            Message = redaction.Redact(failure switch
            {
                null => null,
                SystemFailureException or BuildFailureException or FindingsException => failure.Message,
                OperationCanceledException => "stopped before the work was done (SIGTERM or timeout)",
                _ => $"unexpected error: {failure.GetType().Name}: {failure.Message}",
            }),
            // Only a stage script has an exit code of its own; a refused prepare has none.
            ScriptExitCode = failure is BuildFailureException build && facts.Stage is not null ? build.ScriptExitCode : null,
            Gpus = facts.Gpus,
            Datasets = facts.Datasets,
            Checkpoint = facts.Checkpoint,
        });
    }
}
