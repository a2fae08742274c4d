using System.Globalization;
using GpuExecutor.Containers;

namespace GpuExecutor.Gpus;

/// <summary>Who holds a GPU: the job whose container carries it on its labels.</summary>
public sealed record GpuHolder(string Uuid, string JobId, string ProjectId, DateTimeOffset? Since, string Container);

/// <summary>
/// Which GPUs are taken, read from the labels of managed containers (Docker is the ledger). A
/// GPU is held for as long as its job's container exists, running or not; once cleanup or gc
/// removes it, the GPU is free, with no lease file to go stale.
/// </summary>
public static class GpuLedger
{
    public static async Task<IReadOnlyDictionary<string, GpuHolder>> ReadAsync(IContainerDriver driver, CancellationToken cancellationToken)
    {
        var holders = new Dictionary<string, GpuHolder>(StringComparer.Ordinal);
        foreach (var container in await driver.FindAsync(JobLabels.SelectManaged(), cancellationToken))
        {
            if (!container.Labels.TryGetValue(JobLabels.Gpus, out var uuids) || uuids.Length == 0)
                continue;
            container.Labels.TryGetValue(JobLabels.JobId, out var jobId);
            container.Labels.TryGetValue(JobLabels.ProjectId, out var projectId);
            DateTimeOffset? since = container.Labels.TryGetValue(JobLabels.StartedAt, out var startedText)
                && long.TryParse(startedText, NumberStyles.Integer, CultureInfo.InvariantCulture, out var started)
                    ? DateTimeOffset.FromUnixTimeSeconds(started)
                    : null;
            foreach (var uuid in uuids.Split(',', StringSplitOptions.RemoveEmptyEntries))
                holders[uuid] = new GpuHolder(uuid, jobId ?? "?", projectId ?? "?", since, container.Name);
        }
        return holders;
    }
}
