using System.Globalization;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace GpuExecutor.Checkpoints;

/// <summary>
/// One job's part in a run, as the run's history in the store keeps it
/// (<c>runs/RUN/segments/JOB.json</c>): where and when it trained, what it resumed from, how it
/// took the run, and how it ended. One object per job, written only by that job's own prepare,
/// `run` and agent, so hosts never write over each other's.
/// </summary>
public sealed record RunSegment(
    [property: JsonPropertyName("job_id")] long JobId,
    [property: JsonPropertyName("host")] string Host,
    [property: JsonPropertyName("prepared_at")] DateTimeOffset PreparedAt)
{
    /// <summary>The generation the job resumed from; null when it started empty or adopted a training.</summary>
    [JsonPropertyName("restored_generation")]
    public long? RestoredGeneration { get; init; }

    /// <summary>Who committed that generation: "job 42 on host gpu-3".</summary>
    [JsonPropertyName("restored_from")]
    public string? RestoredFrom { get; init; }

    /// <summary>Newer generations restore passed over as bad, with why.</summary>
    [JsonPropertyName("fallbacks")]
    public IReadOnlyList<string>? Fallbacks { get; init; }

    /// <summary>How the job took the run's lease: "free", "released by job 41 on host gpu-3", "expired: job 41 on host gpu-2"...</summary>
    [JsonPropertyName("lease")]
    public string? Lease { get; init; }

    /// <summary>The job whose orphaned training this job adopted (re-attach), if any.</summary>
    [JsonPropertyName("adopted_job")]
    public long? AdoptedJob { get; init; }

    [JsonPropertyName("training_started_at")]
    public DateTimeOffset? TrainingStartedAt { get; init; }

    [JsonPropertyName("ended_at")]
    public DateTimeOffset? EndedAt { get; init; }

    /// <summary>success, failed, stopped, deadline, system failure, lease lost, or ended unseen.</summary>
    [JsonPropertyName("outcome")]
    public string? Outcome { get; init; }

    [JsonPropertyName("why")]
    public string? Why { get; init; }

    public static string RecordName(long jobId) => "segments/" + jobId.ToString("D12", CultureInfo.InvariantCulture) + ".json";

    public byte[] ToJson() => JsonSerializer.SerializeToUtf8Bytes(this, RunRecordJsonContext.Default.RunSegment);

    public static RunSegment? Parse(byte[] json)
    {
        try
        {
            return JsonSerializer.Deserialize(json, RunRecordJsonContext.Default.RunSegment);
        }
        catch (JsonException)
        {
            return null;
        }
    }
}

/// <summary>The run's history in the store: one <see cref="RunSegment"/> per job.</summary>
public static class RunHistory
{
    private const int LargestSegment = 16 << 10;

    public static async Task<IReadOnlyList<RunSegment>> ReadSegmentsAsync(this CheckpointRepository repository, CancellationToken cancellationToken)
    {
        var segments = new List<RunSegment>();
        foreach (var name in await repository.ListRunRecordsAsync("segments/", cancellationToken))
        {
            if (await repository.ReadRunRecordAsync(name, LargestSegment, cancellationToken) is { } bytes && RunSegment.Parse(bytes) is { } segment)
                segments.Add(segment);
        }
        return segments.OrderBy(segment => segment.PreparedAt).ThenBy(segment => segment.JobId).ToList();
    }

    public static async Task<RunSegment?> ReadSegmentAsync(this CheckpointRepository repository, long jobId, CancellationToken cancellationToken) =>
        await repository.ReadRunRecordAsync(RunSegment.RecordName(jobId), LargestSegment, cancellationToken) is { } bytes ? RunSegment.Parse(bytes) : null;

    public static Task WriteSegmentAsync(this CheckpointRepository repository, RunSegment segment, CancellationToken cancellationToken) =>
        repository.WriteRunRecordAsync(RunSegment.RecordName(segment.JobId), segment.ToJson(), cancellationToken);

    /// <summary>Changes this job's segment, if prepare wrote one (a job without checkpoints has none).</summary>
    public static async Task UpdateSegmentAsync(this CheckpointRepository repository, long jobId, Func<RunSegment, RunSegment?> change, CancellationToken cancellationToken)
    {
        if (await repository.ReadSegmentAsync(jobId, cancellationToken) is { } segment && change(segment) is { } changed)
            await repository.WriteSegmentAsync(changed, cancellationToken);
    }
}
