using System.Globalization;
using GpuExecutor.Configuration;
using GpuExecutor.Containers;
using GpuExecutor.Protocol;

namespace GpuExecutor.Jobs;

/// <summary>
/// The host directories a job's containers mount. Built only from the config and numeric ids
/// out of the trusted payload, so no job input can steer them elsewhere on the host.
/// </summary>
public sealed record JobWorkspace(string BuildsHostDir, string CacheHostDir)
{
    /// <summary>The job's dataset views, read-only.</summary>
    public IReadOnlyList<BindMount> DatasetMounts { get; init; } = [];

    /// <summary>The run's checkpoint directory, read-write, when the job turned checkpoints on.</summary>
    public BindMount? CheckpointMount { get; init; }

    public const string BuildsDirPrefix = "job-";

    public static JobWorkspace For(ExecutorConfig config, JobIdentity job) => new(
        Path.Combine(config.Builds.HostDir, BuildsDirPrefix + job.JobId.ToString(CultureInfo.InvariantCulture)),
        Path.Combine(config.Cache.HostDir, "project-" + job.ProjectId.ToString(CultureInfo.InvariantCulture)));

    public IReadOnlyList<BindMount> Mounts(ExecutorConfig config) =>
    [
        new BindMount(BuildsHostDir, config.Builds.ContainerDir, ReadOnly: false),
        new BindMount(CacheHostDir, config.Cache.ContainerDir, ReadOnly: false),
        .. DatasetMounts,
        .. (CheckpointMount is { } checkpoints ? [checkpoints] : Array.Empty<BindMount>()),
    ];

    /// <summary>
    /// The job's project directory ($CI_PROJECT_DIR, which the runner sets below the builds
    /// directory, and which the job can override) as directory names below <see cref="BuildsHostDir"/>.
    /// Null when it is not a plain path below the builds mount: nothing is written for it then.
    /// </summary>
    public static IReadOnlyList<string>? ProjectDirectoryBelowBuilds(ExecutorConfig config, string? projectDir)
    {
        var buildsDir = config.Builds.ContainerDir.TrimEnd('/') + "/";
        if (projectDir is null || !projectDir.StartsWith(buildsDir, StringComparison.Ordinal) || projectDir.Length > 4096)
            return null;
        var names = projectDir[buildsDir.Length..].Split('/', StringSplitOptions.RemoveEmptyEntries);
        return names.Length == 0 || names.Any(name => name is "." or ".." || name.Contains('\0')) ? null : names;
    }

    /// <summary>The job id of a per-job directory name ("job-ID": builds directories, dataset views), or null when the name is not one of ours.</summary>
    public static long? JobIdOfDirectoryName(string directoryName) =>
        directoryName.StartsWith(BuildsDirPrefix, StringComparison.Ordinal)
        && long.TryParse(directoryName.AsSpan(BuildsDirPrefix.Length), NumberStyles.None, CultureInfo.InvariantCulture, out var jobId)
            ? jobId
            : null;
}
