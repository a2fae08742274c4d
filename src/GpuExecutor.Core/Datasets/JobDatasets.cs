using GpuExecutor.Configuration;
using GpuExecutor.Containers;
using GpuExecutor.JobLog;
using GpuExecutor.Storage;

namespace GpuExecutor.Datasets;

/// <summary>A job's datasets as prepare leaves them: the views to mount, and whether objects of streamed datasets are still to come.</summary>
public sealed record MaterializedDatasets(IReadOnlyList<BindMount> Mounts, bool Streaming, DatasetCache.Summary? Summary = null)
{
    public static readonly MaterializedDatasets None = new([], false);
}

/// <summary>A job's DATASETS, made ready in prepare: fetched into the host cache and laid out as its read-only views.</summary>
public sealed class JobDatasets(ExecutorConfig config, IObjectStoreOpener stores, TextWriter log)
{
    public async Task<MaterializedDatasets> MaterializeAsync(long jobId, IReadOnlyList<DatasetMount> datasets, CancellationToken cancellationToken)
    {
        using (JobLogSection.Start(log, "gpu_executor_datasets", $"Datasets: {datasets.Count}", collapsed: true))
        {
            var clock = System.Diagnostics.Stopwatch.StartNew();
            var cache = new DatasetCache(config.StateDir, log.WriteLine);
            IReadOnlyList<BindMount> mounts;
            DatasetCache.Summary summary;
            try
            {
                (mounts, summary) = await cache.MaterializeAsync(jobId, datasets, config.Stores, stores, new ObjectFetcher(log.WriteLine), cancellationToken, config.Datasets);
            }
            finally
            {
                // What was fetched counts, even for a job whose datasets then failed.
                cache.FlushCounts();
            }
            if (config.Datasets.CacheMaxBytes is { } cap && cache.Evict(cap, DateTime.UtcNow) is > 0 and var evicted)
                log.WriteLine($"  evicted {evicted / 1048576.0:0.0} MiB of least recently used objects (datasets.cache_max_size)");
            foreach (var dataset in datasets)
                log.WriteLine($"  {dataset.Source} -> {dataset.ContainerPath} (read-only{(dataset.Mode == DatasetMode.Stream ? ", streamed" : "")})");
            log.WriteLine(
                $"  {summary.Objects} objects in {clock.Elapsed.TotalSeconds:0.0} s: {summary.BytesFetched / 1048576.0:0.0} MiB fetched, " +
                $"{summary.BytesServed / 1048576.0:0.0} MiB served, {summary.CacheHits} objects from the host cache" +
                (summary.Quarantined > 0 ? $", {summary.Quarantined} left out (unsafe keys)" : "") + ".");
            if (summary.StreamPending > 0)
                log.WriteLine(
                    $"  The job starts now; the other {summary.StreamPending} objects ({summary.StreamPendingBytes / 1048576.0:0.0} MiB) stream in while it runs, " +
                    $"{config.Datasets.StreamParallelObjects} at a time, each appearing whole and verified. Each streamed view's {DatasetStreams.IndexFileName} says which are ready.");
            return new MaterializedDatasets(mounts, summary.StreamPending > 0, summary);
        }
    }

    /// <summary>
    /// A store's credentials reach the job only where the admin set pass_credentials_to_job, and
    /// only for a store the job's DATASETS use; the first such store's, as the standard AWS_*
    /// variables that AWS SDKs and CLIs read.
    /// </summary>
    public static Dictionary<string, string> StoreCredentialsForJob(ExecutorConfig config, IReadOnlyList<DatasetMount> datasets)
    {
        var environment = new Dictionary<string, string>();
        var store = datasets
            .Select(dataset => config.Stores[dataset.Source.Store])
            .FirstOrDefault(candidate => candidate.PassCredentialsToJob && candidate.AccessKeyId is not null);
        if (store is null)
            return environment;
        environment["AWS_ACCESS_KEY_ID"] = store.AccessKeyId!.Value;
        environment["AWS_SECRET_ACCESS_KEY"] = store.SecretAccessKey!.Value;
        environment["AWS_REGION"] = store.Region;
        if (store.Endpoint is { } endpoint)
            environment["AWS_ENDPOINT_URL"] = endpoint;
        return environment;
    }
}
