using System.Globalization;
using System.Text.Json.Serialization;
using GpuExecutor.HostFiles;
using GpuExecutor.Jobs;

namespace GpuExecutor.Checkpoints;

/// <summary>A training stage in a container: which job started it, where, which stage, under which stage nonce.</summary>
public abstract record TrainingStage(
    [property: JsonPropertyName("job_id")] long JobId,
    [property: JsonPropertyName("container")] string Container,
    [property: JsonPropertyName("stage")] string Stage,
    [property: JsonPropertyName("nonce")] string Nonce);

/// <summary>
/// The run's training as `run` started it. `run` holds <see cref="RunDirectories.MainStageLock"/>
/// while it follows the stage; a record whose lock is free and whose container still runs is
/// training no runner follows (its runner died), which the run's next job adopts instead of
/// starting training again.
/// </summary>
public sealed record MainStageRecord(long JobId, string Container, string Stage, string Nonce,
    [property: JsonPropertyName("started_at")] DateTimeOffset StartedAt) : TrainingStage(JobId, Container, Stage, Nonce);

/// <summary>What prepare adopted for a job: that training, which this job's main step follows until this job's deadline.</summary>
public sealed record AdoptedStage(long JobId, string Container, string Stage, string Nonce,
    [property: JsonPropertyName("deadline")] DateTimeOffset Deadline) : TrainingStage(JobId, Container, Stage, Nonce);

public static class Reattach
{
    /// <summary>
    /// Stages that would change the adopted container's worktree under the running training
    /// (git's checkout and clean, cache and artifact extraction): an adopting job skips them.
    /// </summary>
    public static readonly IReadOnlySet<string> SkippedWhenAdopting = new HashSet<string>(StringComparer.Ordinal)
    {
        "get_sources", "clear_worktree", "restore_cache", "download_artifacts",
    };

    public static string MainStageFile(RunDirectories directories) => Path.Combine(directories.Root, "main-stage.json");

    private static string AdoptionsDir(string stateDir) => Path.Combine(stateDir, "adopted");

    /// <summary>Keyed by job id, not run key: cleanup reads it from the payload alone.</summary>
    public static string AdoptionFile(string stateDir, long jobId) =>
        Path.Combine(AdoptionsDir(stateDir), $"job-{jobId.ToString(CultureInfo.InvariantCulture)}.json");

    public static void WriteMainStage(RunDirectories directories, MainStageRecord record) =>
        StateFiles.Write(MainStageFile(directories), record, ReattachJsonContext.Default.MainStageRecord);

    public static MainStageRecord? ReadMainStage(RunDirectories directories) =>
        StateFiles.Read(MainStageFile(directories), ReattachJsonContext.Default.MainStageRecord);

    public static void WriteAdoption(string stateDir, long jobId, AdoptedStage adopted)
    {
        Directory.CreateDirectory(AdoptionsDir(stateDir));
        StateFiles.Write(AdoptionFile(stateDir, jobId), adopted, ReattachJsonContext.Default.AdoptedStage);
    }

    public static AdoptedStage? ReadAdoption(string stateDir, long jobId) =>
        StateFiles.Read(AdoptionFile(stateDir, jobId), ReattachJsonContext.Default.AdoptedStage);

    /// <summary>
    /// The latest deadline of a job that adopted <paramref name="adoptedJobId"/>'s training, or
    /// null: what that job left running (its agent, its dataset stream) lives to this deadline,
    /// not only to its own job's.
    /// </summary>
    public static DateTimeOffset? AdoptedUntil(string stateDir, long adoptedJobId) => ReadAllAdoptions(stateDir)
        .Where(pair => pair.Adopted.JobId == adoptedJobId)
        .Select(pair => (DateTimeOffset?)pair.Adopted.Deadline)
        .Max();

    /// <summary>Every adoption on this host, with the file that records it: for gc, which must not remove a container a live job follows.</summary>
    public static IReadOnlyList<(string File, AdoptedStage Adopted)> ReadAllAdoptions(string stateDir)
    {
        var directory = AdoptionsDir(stateDir);
        if (!Directory.Exists(directory))
            return [];
        return Directory.EnumerateFiles(directory, "job-*.json")
            .Select(file => (file, StateFiles.Read(file, ReattachJsonContext.Default.AdoptedStage)))
            .Where(pair => pair.Item2 is not null)
            .Select(pair => (pair.file, pair.Item2!))
            .ToList();
    }
}

[JsonSerializable(typeof(MainStageRecord))]
[JsonSerializable(typeof(AdoptedStage))]
internal sealed partial class ReattachJsonContext : JsonSerializerContext;
