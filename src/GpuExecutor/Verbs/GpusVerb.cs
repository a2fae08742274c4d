using System.Globalization;
using GpuExecutor.Containers;
using GpuExecutor.Gpus;

namespace GpuExecutor.Verbs;

/// <summary>`gpus`: for admins, every GPU of the host with who holds it (job, project, since when).</summary>
public static class GpusVerb
{
    public static async Task<int> RunAsync(VerbContext context, TextWriter stdout)
    {
        var settings = context.Config.Gpus;
        var inventory = await new NvidiaSmi(settings.NvidiaSmi).QueryAsync(context.Stop);
        using var driver = new DockerContainerDriver(context.Config.Docker.Endpoint);
        var holders = await GpuLedger.ReadAsync(driver, context.Stop);
        var pool = new GpuAllocator(driver, settings, context.Config.StateDir, _ => { }).InPool(inventory).Select(gpu => gpu.Uuid).ToHashSet();

        stdout.WriteLine($"{"GPU",-4} {"UUID",-40} {"MODEL",-24} {"MEMORY",-18} STATE");
        foreach (var gpu in inventory)
        {
            var memory = $"{Text(gpu.MemoryUsedMiB)}/{Text(gpu.MemoryTotalMiB)} MiB";
            var state = holders.TryGetValue(gpu.Uuid, out var holder)
                ? $"job {holder.JobId} (project {holder.ProjectId}){(holder.Since is { } since ? $" since {since:yyyy-MM-dd HH:mm:ss}Z" : "")}, {holder.Container}"
                : !pool.Contains(gpu.Uuid)
                    ? "not in gpus.pool"
                    : gpu.MemoryUsedMiB > settings.BusyMemoryMiB
                        ? "busy outside any job"
                        : "free";
            stdout.WriteLine($"{gpu.Index,-4} {gpu.Uuid,-40} {gpu.Name,-24} {memory,-18} {state}{(gpu.MigEnabled ? " (MIG enabled)" : "")}");
        }
        return ExitCodes.Success;
    }

    private static string Text(long? mebibytes) => mebibytes?.ToString(CultureInfo.InvariantCulture) ?? "?";
}
