using System.Globalization;
using GpuExecutor.Containers;
using GpuExecutor.Gpus;
using GpuExecutor.Outcomes;
using GpuExecutor.Workflows;

namespace GpuExecutor.Verbs;

/// <summary>
/// `gpus [--links]`: for admins, every GPU of the host with who holds it (job, project, since
/// when); with --links, also the link matrix as the allocator ranks it.
/// </summary>
public static class GpusVerb
{
    public static async Task RunAsync(VerbContext context, bool showLinks, TextWriter stdout)
    {
        var settings = context.Config.Gpus;
        var nvidiaSmi = context.Adapters.Gpus;
        var inventory = await nvidiaSmi.QueryAsync(context.Stop);
        var driver = context.Adapters.Containers;
        var pool = GpuAllocator.InPool(settings, inventory).Select(gpu => gpu.Uuid).ToHashSet();

        // The inventory is worth printing even when Docker is down (or absent, as on a host being
        // set up): an admin checking nvidia-smi should not need the daemon. The exit code still
        // says the listing is incomplete.
        IReadOnlyDictionary<string, GpuHolder>? holders = null;
        SystemFailureException? ledgerError = null;
        try
        {
            holders = await GpuLedger.ReadAsync(driver, context.Stop);
        }
        catch (SystemFailureException error)
        {
            ledgerError = error;
        }

        stdout.WriteLine($"{"GPU",-4} {"UUID",-40} {"MODEL",-24} {"MEMORY",-18} STATE");
        foreach (var gpu in inventory)
        {
            var memory = $"{Text(gpu.MemoryUsedMiB)}/{Text(gpu.MemoryTotalMiB)} MiB";
            var busy = gpu.MemoryUsedMiB > settings.BusyMemoryMiB;
            var state = holders is not null && holders.TryGetValue(gpu.Uuid, out var holder)
                ? $"job {holder.JobId} (project {holder.ProjectId}){(holder.Since is { } since ? $" since {since:yyyy-MM-dd HH:mm:ss}Z" : "")}, {holder.Container}"
                : !pool.Contains(gpu.Uuid)
                    ? "not in gpus.pool"
                    : holders is null
                        // Without the ledger a job's GPU and a free one look alike, except by memory.
                        ? busy ? "holder unknown (no ledger), memory in use" : "holder unknown (no ledger), memory free"
                        : busy
                            ? "busy outside any job"
                            : "free";
            stdout.WriteLine($"{gpu.Index,-4} {gpu.Uuid,-40} {gpu.Name,-24} {memory,-18} {state}{(gpu.MigEnabled ? " (MIG enabled)" : "")}");
        }

        // Live, not cached: an admin asking wants what the driver says now.
        if (showLinks)
            WriteLinks(inventory, await nvidiaSmi.TopologyAsync(inventory, cacheDirectory: null, context.Log.WriteLine, context.Stop), stdout);

        if (ledgerError is not null)
            throw new SystemFailureException($"could not read which jobs hold the GPUs: {ledgerError.Message}", ledgerError);
    }

    /// <summary>The job's GPU sampler (<see cref="GpuSampler"/>), started by prepare, detached: `gpus sample JOB`.</summary>
    public static async Task SampleAsync(VerbContext context, string jobText)
    {
        var (jobId, log) = context.DetachedJob(jobText, "usage: gpu-executor gpus sample JOB_ID");
        await new GpuSampler(context.Config, context.Adapters.Containers, context.Adapters.Gpus, log).RunAsync(jobId, context.Stop);
    }

    /// <summary>The pairwise links by GPU index, in nvidia-smi's own legend, as the allocator reads them.</summary>
    private static void WriteLinks(IReadOnlyList<GpuDevice> inventory, GpuTopology topology, TextWriter stdout)
    {
        stdout.WriteLine();
        if (inventory.Count < 2)
        {
            stdout.WriteLine("links: none (fewer than two GPUs)");
            return;
        }
        stdout.WriteLine("links (best first: NV<n>, PIX, PXB, PHB, NODE, SYS):");
        stdout.WriteLine(("      " + string.Concat(inventory.Select(gpu => $"{"GPU" + gpu.Index.ToString(CultureInfo.InvariantCulture),-7}"))).TrimEnd());
        foreach (var row in inventory)
        {
            var cells = inventory.Select(column => column.Index == row.Index ? "X" : topology.Link(row.Index, column.Index).ToString());
            stdout.WriteLine(($"{"GPU" + row.Index.ToString(CultureInfo.InvariantCulture),-6}" + string.Concat(cells.Select(cell => $"{cell,-7}"))).TrimEnd());
        }
    }

    private static string Text(long? mebibytes) => mebibytes?.ToString(CultureInfo.InvariantCulture) ?? "?";
}
