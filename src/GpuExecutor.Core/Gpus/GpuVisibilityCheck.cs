using System.Globalization;
using GpuExecutor.Configuration;
using GpuExecutor.Containers;
using GpuExecutor.JobLog;
using GpuExecutor.Outcomes;
using GpuExecutor.Stages;

namespace GpuExecutor.Gpus;

/// <summary>
/// Shows the job its GPUs in a collapsible section and, with real device requests, checks inside
/// the container that it sees exactly those GPUs: a job must never silently train on the CPU, or
/// on someone else's GPU.
/// </summary>
public static class GpuVisibilityCheck
{
    public static async Task ReportAndCheckAsync(IContainerDriver driver, GpuSettings settings, string container, IReadOnlyList<GpuDevice> gpus, GpuTopology topology, TextWriter log, CancellationToken cancellationToken)
    {
        using (JobLogSection.Start(log, "gpu_executor_gpus", $"GPU allocation: {gpus.Count} GPU{(gpus.Count == 1 ? "" : "s")}", collapsed: false))
        {
            foreach (var gpu in gpus)
            {
                var links = string.Join(" ", gpus.Where(other => other != gpu).Select(other => $"GPU{other.Index}:{topology.Link(gpu.Index, other.Index)}"));
                log.WriteLine($"  GPU {gpu.Index}  {gpu.Uuid}  {gpu.Name}  {gpu.MemoryTotalMiB?.ToString(CultureInfo.InvariantCulture) ?? "?"} MiB{(links.Length > 0 ? "  links " + links : "")}");
            }
            if (settings.Mode == GpuMode.None)
            {
                log.WriteLine("  (gpus.mode = \"none\": assigned and labelled, but no device request was made)");
                return;
            }
        }

        var seen = new MemoryStream();
        var check = new StageRunner(driver, new RunSettings(), _ => { });
        var result = await check.RunAsync(container, System.Text.Encoding.UTF8.GetBytes(NvidiaSmiQuery.VisibleUuidsCommand + "\n"), seen, Stream.Null, cancellationToken);
        var visible = NvidiaSmiQuery.ParseVisibleUuids(System.Text.Encoding.UTF8.GetString(seen.ToArray()));
        var expected = gpus.Select(gpu => gpu.Uuid).Order(StringComparer.Ordinal).ToList();
        if (result.ExitCode != 0 || !visible.SequenceEqual(expected))
            throw new SystemFailureException(
                $"the job container sees GPUs [{string.Join(", ", visible)}] (nvidia-smi exit {result.ExitCode}) instead of its own [{string.Join(", ", expected)}]; is the NVIDIA Container Toolkit installed and configured for Docker?");
    }
}
