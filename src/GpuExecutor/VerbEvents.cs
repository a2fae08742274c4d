using GpuExecutor.AdminLog;
using GpuExecutor.Configuration;
using GpuExecutor.Outcomes;
using GpuExecutor.Protocol;

namespace GpuExecutor;

/// <summary>Turns one finished verb call into its admin log line (<see cref="EventLog"/>).</summary>
public static class VerbEvents
{
    public static void Record(ExecutorConfig config, IRunnerEnvironment environment, string verb, VerbFacts facts, Exception? failure, int exitCode, TimeSpan duration)
    {
        var payload = TryReadPayload(environment);
        var job = payload is null ? null : TryIdentify(payload);
        var redaction = SecretRedaction.For(config, payload);
        EventLog.TryAppend(config.StateDir, new AdminEvent
        {
            Time = DateTimeOffset.UtcNow,
            Version = VersionInfo.Version,
            Host = config.HostName,
            Pid = Environment.ProcessId,
            Verb = verb,
            Job = facts.JobId ?? job?.JobId ?? payload?.Id,
            Project = job?.ProjectId,
            ProjectPath = job?.ProjectPath,
            RunKey = facts.RunKey ?? (job?.RunKey is { Length: > 0 } runKey ? runKey : null),
            Stage = facts.Stage,
            DurationMs = (long)duration.TotalMilliseconds,
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

    /// <summary>The job, where the runner gave one; a broken payload is the verb's failure to report, not this line's.</summary>
    private static JobPayload? TryReadPayload(IRunnerEnvironment environment)
    {
        if (string.IsNullOrEmpty(environment.Get(RunnerVariables.JobResponseFile)))
            return null;
        try
        {
            return JobPayloadReader.Read(environment);
        }
        catch (SystemFailureException)
        {
            return null;
        }
    }

    private static JobIdentity? TryIdentify(JobPayload payload)
    {
        try
        {
            return JobIdentity.From(payload);
        }
        catch (Exception error) when (error is BuildFailureException or SystemFailureException)
        {
            return null;
        }
    }
}
