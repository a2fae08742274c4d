namespace GpuExecutor.Configuration;

public sealed record DatasetSettings
{
    /// <summary>The dataset cache is trimmed to this many bytes after each job's datasets arrive; null: no cap.</summary>
    public long? CacheMaxBytes { get; init; }

    /// <summary>A streamed dataset's job starts once this many of its first objects are in (datasets.stream_first_objects)...</summary>
    public int StreamFirstObjects { get; init; } = 4;

    /// <summary>...and at least this many bytes (datasets.stream_first_size).</summary>
    public long StreamFirstBytes { get; init; }

    /// <summary>Objects fetched at once while a job streams (datasets.stream_parallel_objects): few, so the fetch leaves the training its CPU and disk.</summary>
    public int StreamParallelObjects { get; init; } = 4;

    /// <summary>A job's stream fetches at most this many bytes per second (datasets.stream_max_rate); null: no cap.</summary>
    public long? StreamMaxBytesPerSecond { get; init; }
}
