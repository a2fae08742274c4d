using GpuExecutor.Checkpoints;
using GpuExecutor.Configuration;
using GpuExecutor.Datasets;
using GpuExecutor.Outcomes;

namespace GpuExecutor.Verbs;

/// <summary>
/// `datasets list | prune SIZE | prefetch SOURCE`: the host's dataset cache, for admins.
/// prefetch takes a source as a DATASETS line would name it, checked against the same rules.
/// `datasets stream JOB` is the detached fetcher of a job's streamed datasets, which prepare starts.
/// </summary>
public static class DatasetsVerb
{
    /// <summary>Prefetching uses job id 0's view, which no GitLab job can have.</summary>
    private const long PrefetchJobId = 0;

    private static DatasetCache Cache(VerbContext context, TextWriter stdout) => new(context.Config.StateDir, line => stdout.WriteLine(line));

    public static void List(VerbContext context, TextWriter stdout)
    {
        var cache = Cache(context, stdout);
        var objects = cache.List();
        stdout.WriteLine($"{"LAST USED (UTC)",-20} {"SIZE (MiB)",12} {"IN USE",-6} SOURCE");
        foreach (var item in objects)
            stdout.WriteLine($"{item.LastUsedUtc:yyyy-MM-dd HH:mm:ss} {item.Size / 1048576.0,12:0.0} {(item.InUse ? "yes" : "no"),-6} {item.Source}");
        stdout.WriteLine($"{objects.Count} objects, {objects.Sum(item => item.Size) / 1048576.0:0.0} MiB; views of jobs: {string.Join(", ", cache.Views())}");
    }

    public static void Prune(VerbContext context, string sizeText, TextWriter stdout)
    {
        var cache = Cache(context, stdout);
        if (!ByteSize.TryParse(sizeText, out var maxBytes) && sizeText != "0")
            throw new SystemFailureException($"'{sizeText}' is not a size; use, say, 500g.");
        var removed = cache.Evict(sizeText == "0" ? 0 : maxBytes, DateTime.UtcNow);
        stdout.WriteLine($"removed {removed / 1048576.0:0.0} MiB (objects in use, or used in the last {DatasetCache.EvictionQuietPeriod.TotalMinutes:0} minutes, stay)");
    }

    public static async Task PrefetchAsync(VerbContext context, string source, TextWriter stdout)
    {
        var config = context.Config;
        var cache = Cache(context, stdout);
        var datasets = DatasetDeclaration.Parse($"{source} -> /prefetch", config);
        try
        {
            DatasetCache.Summary summary;
            try
            {
                (_, summary) = await cache.MaterializeAsync(PrefetchJobId, datasets, config.Stores, context.Adapters.Stores, new ObjectFetcher(line => stdout.WriteLine(line)), context.Stop);
            }
            finally
            {
                cache.FlushCounts();
            }
            stdout.WriteLine($"{summary.Objects} objects: {summary.BytesFetched / 1048576.0:0.0} MiB fetched, {summary.CacheHits} already cached.");
        }
        finally
        {
            cache.RemoveViews(PrefetchJobId);
        }
    }

    /// <summary>The detached fetcher of a job's streamed datasets: `datasets stream JOB`.</summary>
    public static async Task StreamAsync(VerbContext context, string jobText)
    {
        var config = context.Config;
        // Started by prepare, detached; its log is a file beside the job's views.
        var (jobId, log) = context.DetachedJob(jobText, "usage: gpu-executor datasets stream JOB_ID");
        await new DatasetStreamer(config, context.Adapters.Containers, context.Adapters.Stores, log, adopted => Reattach.AdoptedUntil(config.StateDir, adopted)).RunAsync(jobId, context.Stop);
    }
}
