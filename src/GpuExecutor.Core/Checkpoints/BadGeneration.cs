using System.Globalization;
using System.Text.Json;
using System.Text.Json.Serialization;
using GpuExecutor.Outcomes;

namespace GpuExecutor.Checkpoints;

/// <summary>
/// A committed generation that failed restore: its manifest is missing or refused, or one of its
/// blobs is missing, cut short or hashes wrong. Kept in the store beside the run, so every host
/// skips it, retention keeps it for inspection, and the next commit uploads its bad blobs afresh.
/// </summary>
public sealed record BadGeneration(
    [property: JsonPropertyName("generation")] long Generation,
    [property: JsonPropertyName("reason")] string Reason,
    [property: JsonPropertyName("bad_blobs")] IReadOnlyList<string> BadBlobs,
    [property: JsonPropertyName("found_at")] DateTimeOffset FoundAt,
    [property: JsonPropertyName("found_by")] string FoundBy)
{
    public const int LargestRecord = 64 << 10;

    public byte[] ToJson() => JsonSerializer.SerializeToUtf8Bytes(this, RunRecordJsonContext.Default.BadGeneration);

    /// <summary>The record, or null when it is damaged (the generation still counts as bad: its key says so).</summary>
    public static BadGeneration? Parse(byte[] json)
    {
        try
        {
            return JsonSerializer.Deserialize(json, RunRecordJsonContext.Default.BadGeneration);
        }
        catch (JsonException)
        {
            return null;
        }
    }
}

/// <summary>
/// A generation that cannot be restored as committed. Distinct from a store that does not answer
/// (an <c>ObjectStoreException</c>): only this makes restore fall back to an older generation.
/// A system failure when it escapes, as with a pinned generation, since the store is at fault.
/// </summary>
public sealed class CorruptGenerationException(long generation, string reason, IReadOnlyList<string> badBlobs, Exception? inner = null)
    : SystemFailureException($"checkpoint generation {generation.ToString(CultureInfo.InvariantCulture)} is corrupt: {reason}", inner)
{
    public long Generation { get; } = generation;
    public string Reason { get; } = reason;
    public IReadOnlyList<string> BadBlobs { get; } = badBlobs;
}

/// <summary>The records kept beside a run in the store, for every host to read.</summary>
[JsonSourceGenerationOptions(WriteIndented = true, DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull)]
[JsonSerializable(typeof(BadGeneration))]
[JsonSerializable(typeof(TrainingLeaseRecord))]
[JsonSerializable(typeof(RunSegment))]
internal sealed partial class RunRecordJsonContext : JsonSerializerContext;
