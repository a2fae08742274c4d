using System.Globalization;
using GpuExecutor.Clocks;
using GpuExecutor.Protocol;

namespace GpuExecutor.Containers;

/// <summary>
/// Docker is the ledger: the facts other processes need about a job live on its containers'
/// labels, under one reverse-DNS prefix, so "my container" and "what is orphaned" are label
/// queries and there are no lease files to go stale.
/// </summary>
public static class JobLabels
{
    public const string Prefix = "io.gpu-executor.";
    public const string Managed = Prefix + "managed";
    public const string JobId = Prefix + "job.id";
    public const string ProjectId = Prefix + "project.id";
    public const string PipelineId = Prefix + "pipeline.id";
    public const string RunKey = Prefix + "run-key";
    public const string StartedAt = Prefix + "started-at";
    public const string Deadline = Prefix + "deadline";

    /// <summary>The same deadline on the host's boot clock (<see cref="BootInstant"/>): what a wall-clock jump does not move.</summary>
    public const string DeadlineOnBootClock = Prefix + "deadline.boot";
    public const string Role = Prefix + "role";

    /// <summary>The UUIDs of the GPUs the job holds, comma-separated; absent when it holds none.</summary>
    public const string Gpus = Prefix + "gpus";

    public static IReadOnlyDictionary<string, string> For(JobIdentity job, string role, DateTimeOffset startedAt) =>
        new Dictionary<string, string>
        {
            [Managed] = "true",
            [JobId] = job.JobId.ToString(CultureInfo.InvariantCulture),
            [ProjectId] = job.ProjectId.ToString(CultureInfo.InvariantCulture),
            [PipelineId] = job.PipelineId.ToString(CultureInfo.InvariantCulture),
            [RunKey] = job.RunKey,
            [StartedAt] = startedAt.ToUnixTimeSeconds().ToString(CultureInfo.InvariantCulture),
            [Deadline] = (startedAt + job.Timeout).ToUnixTimeSeconds().ToString(CultureInfo.InvariantCulture),
            [Role] = role,
        }.WithBootClockDeadline(startedAt + job.Timeout);

    private static Dictionary<string, string> WithBootClockDeadline(this Dictionary<string, string> labels, DateTimeOffset deadline)
    {
        // Placed on the boot clock from now: prepare's start was seconds ago, on the same clock.
        if (HostDeadline.In(deadline - DateTimeOffset.UtcNow).OnBootClock is { } onBootClock)
            labels[DeadlineOnBootClock] = onBootClock.ToString();
        return labels;
    }

    public static IReadOnlyDictionary<string, string> SelectJob(long jobId) =>
        new Dictionary<string, string>
        {
            [Managed] = "true",
            [JobId] = jobId.ToString(CultureInfo.InvariantCulture),
        };

    public static IReadOnlyDictionary<string, string> SelectManaged() =>
        new Dictionary<string, string> { [Managed] = "true" };

    /// <summary>The job's deadline in the wall clock's present terms (see <see cref="ReadHostDeadline"/>).</summary>
    public static DateTimeOffset? ReadDeadline(IReadOnlyDictionary<string, string> labels) => ReadHostDeadline(labels)?.Current;

    /// <summary>
    /// The job's deadline as prepare wrote it: on the host's boot clock too, so that a process
    /// that keeps it (the agent, the fetcher) sees it move with a jump of the wall clock.
    /// </summary>
    public static HostDeadline? ReadHostDeadline(IReadOnlyDictionary<string, string> labels) =>
        ReadTime(labels, Deadline) is { } wallTime
            ? new HostDeadline(wallTime, BootInstant.Parse(labels.GetValueOrDefault(DeadlineOnBootClock)))
            : null;

    /// <summary>When prepare began, which the runner's clock for the job's timeout counts from.</summary>
    public static DateTimeOffset? ReadStartedAt(IReadOnlyDictionary<string, string> labels) => ReadTime(labels, StartedAt);

    private static DateTimeOffset? ReadTime(IReadOnlyDictionary<string, string> labels, string label) =>
        labels.TryGetValue(label, out var text) && long.TryParse(text, NumberStyles.Integer, CultureInfo.InvariantCulture, out var seconds)
            ? DateTimeOffset.FromUnixTimeSeconds(seconds)
            : null;
}

/// <summary>Per-job container names: deterministic, so `run` reaches its container without a lookup.</summary>
public static class JobContainerNames
{
    public const string JobRole = "job";
    public const string HelperRole = "helper";

    public static string For(long jobId, string role) =>
        string.Create(CultureInfo.InvariantCulture, $"gpu-executor-{jobId}-{role}");

    public static string ForStage(long jobId, string stageName, bool hasHelper) =>
        hasHelper && StagePlacement.For(stageName) == StageContainer.Helper
            ? For(jobId, HelperRole)
            : For(jobId, JobRole);
}
