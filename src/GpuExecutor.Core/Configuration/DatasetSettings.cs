namespace GpuExecutor.Configuration;

public sealed record DatasetSettings
{
    /// <summary>The dataset cache is trimmed to this many bytes after each job's datasets arrive; null: no cap.</summary>
    public long? CacheMaxBytes { get; init; }
}
