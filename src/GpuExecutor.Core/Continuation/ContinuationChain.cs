using System.Text.Json;
using GpuExecutor.Checkpoints;

namespace GpuExecutor.Continuation;

/// <summary>The run's continuation chain in the checkpoint store: `runs/RUN/CONTINUATION.json`, beside LATEST.</summary>
public static class ContinuationChain
{
    private const string RecordName = "CONTINUATION.json";
    private const int MaximumRecordBytes = 4096;

    /// <summary>The run's chain record; null when it has none, or an unreadable one.</summary>
    public static async Task<ContinuationRecord?> ReadContinuationAsync(this CheckpointRepository repository, CancellationToken cancellationToken)
    {
        var bytes = await repository.ReadRunRecordAsync(RecordName, MaximumRecordBytes, cancellationToken);
        try
        {
            return bytes is null ? null : JsonSerializer.Deserialize(bytes, ContinuationJsonContext.Default.ContinuationRecord);
        }
        catch (JsonException)
        {
            // Only the segment count depends on it: a damaged record starts a new chain.
            return null;
        }
    }

    public static Task WriteContinuationAsync(this CheckpointRepository repository, ContinuationRecord record, CancellationToken cancellationToken) =>
        repository.WriteRunRecordAsync(RecordName, JsonSerializer.SerializeToUtf8Bytes(record, ContinuationJsonContext.Default.ContinuationRecord), cancellationToken);
}
