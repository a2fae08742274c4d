using System.Globalization;

namespace GpuExecutor.Telemetry;

/// <summary>One GPU over the samples: what the "GPU usage" section shows for it.</summary>
public sealed record GpuUsage(
    string Uuid,
    int Index,
    int Samples,
    double MeanUtilizationPercent,
    double P95UtilizationPercent,
    double PeakMemoryMiB,
    double? MeanPowerWatts,
    double IdleFraction,
    TimeSpan Held);

/// <summary>A job's GPU use, from its samples.</summary>
public sealed record GpuUsageReport(IReadOnlyList<GpuUsage> Gpus, double GpuHours, TimeSpan Interval)
{
    /// <summary>
    /// Per GPU: the mean and the 95th percentile (nearest rank) of its utilisation, its peak
    /// memory, its mean power, and the share of its samples under <paramref name="idlePercent"/>.
    /// Each sample stands for one interval, so a GPU is held from its first sample to one
    /// interval after its last; GPU-hours add that up over the GPUs.
    /// </summary>
    public static GpuUsageReport From(IReadOnlyList<GpuSample> samples, TimeSpan interval, int idlePercent)
    {
        var gpus = samples.GroupBy(sample => sample.Uuid, StringComparer.Ordinal).Select(group =>
        {
            var ordered = group.OrderBy(sample => sample.Time).ToList();
            var utilization = ordered.Where(sample => sample.UtilizationPercent is not null).Select(sample => sample.UtilizationPercent!.Value).Order().ToList();
            var power = ordered.Where(sample => sample.PowerWatts is not null).Select(sample => sample.PowerWatts!.Value).ToList();
            return new GpuUsage(
                group.Key,
                ordered[^1].Index,
                ordered.Count,
                utilization.Count == 0 ? 0 : utilization.Average(),
                utilization.Count == 0 ? 0 : utilization[(int)Math.Ceiling(0.95 * utilization.Count) - 1],
                ordered.Max(sample => sample.MemoryUsedMiB ?? 0),
                power.Count == 0 ? null : power.Average(),
                utilization.Count == 0 ? 0 : (double)utilization.Count(value => value < idlePercent) / utilization.Count,
                ordered[^1].Time - ordered[0].Time + interval);
        }).OrderBy(gpu => gpu.Index).ToList();
        return new GpuUsageReport(gpus, gpus.Sum(gpu => gpu.Held.TotalHours), interval);
    }

    /// <summary>GPUs that stayed under the idle line in most of their samples: the job asked for more than it used.</summary>
    public IReadOnlyList<GpuUsage> Idle => Gpus.Where(gpu => gpu.IdleFraction > 0.5).ToList();

    /// <summary>The section's lines: a table, one row per GPU, then the GPU-hours.</summary>
    public IEnumerable<string> TableLines()
    {
        yield return $"  {"GPU",-4} {"UUID",-42} {"MEAN",5} {"P95",5} {"PEAK MEMORY",12} {"MEAN POWER",11}";
        foreach (var gpu in Gpus)
            yield return string.Create(CultureInfo.InvariantCulture,
                $"  {gpu.Index,-4} {gpu.Uuid,-42} {gpu.MeanUtilizationPercent,4:0}% {gpu.P95UtilizationPercent,4:0}% {gpu.PeakMemoryMiB,8:0} MiB {(gpu.MeanPowerWatts is { } watts ? $"{watts:0} W" : "n/a"),11}");
        var held = Gpus.Count == 0 ? TimeSpan.Zero : Gpus.Max(gpu => gpu.Held);
        yield return string.Create(CultureInfo.InvariantCulture,
            $"  {Gpus.Count} GPU(s) for {held.TotalMinutes:0.0} min: {GpuHours:0.000} GPU-hours ({Gpus.Sum(gpu => gpu.Samples)} samples, one every {Interval.TotalSeconds:0} s).");
    }

    /// <summary>The loud line for a GPU that stayed idle, in the words an ML engineer would search for.</summary>
    public static string IdleWarning(GpuUsage gpu, int idlePercent) => string.Create(CultureInfo.InvariantCulture,
        $"WARNING: GPU {gpu.Index} averaged {gpu.MeanUtilizationPercent:0}% for {gpu.Held.TotalMinutes:0.#} min (under {idlePercent}% in {gpu.IdleFraction:0%} of its samples): did the job use every GPU it asked for?");
}
