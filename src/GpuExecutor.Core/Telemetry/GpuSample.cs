using System.Globalization;

namespace GpuExecutor.Telemetry;

/// <summary>
/// One GPU at one moment, as nvidia-smi reports it. A value nvidia-smi gives as "[N/A]" or
/// "[Not Supported]" (power on some boards, clocks under MIG) is null.
/// </summary>
public sealed record GpuSample(
    DateTimeOffset Time,
    string Uuid,
    int Index,
    double? UtilizationPercent,
    double? MemoryUtilizationPercent,
    double? MemoryUsedMiB,
    double? PowerWatts,
    double? TemperatureCelsius,
    double? SmClockMHz)
{
    /// <summary>The CSV's header: the file a job can publish with `artifacts:` and the store keeps per segment.</summary>
    public const string CsvHeader = "time,uuid,index,utilization_gpu_percent,utilization_memory_percent,memory_used_mib,power_draw_watts,temperature_celsius,sm_clock_mhz";

    public string ToCsv() => string.Join(',',
        Time.UtcDateTime.ToString("yyyy-MM-ddTHH:mm:ss.fffZ", CultureInfo.InvariantCulture), Uuid, Index.ToString(CultureInfo.InvariantCulture),
        Number(UtilizationPercent), Number(MemoryUtilizationPercent), Number(MemoryUsedMiB), Number(PowerWatts), Number(TemperatureCelsius), Number(SmClockMHz));

    /// <summary>A line of the CSV; null for the header or a line that is not one (a torn last line after a crash).</summary>
    public static GpuSample? FromCsv(string line)
    {
        var fields = line.Split(',');
        if (fields.Length != 9 || !DateTimeOffset.TryParse(fields[0], CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal, out var time)
            || !int.TryParse(fields[2], NumberStyles.None, CultureInfo.InvariantCulture, out var index))
            return null;
        return new GpuSample(time, fields[1], index, Parse(fields[3]), Parse(fields[4]), Parse(fields[5]), Parse(fields[6]), Parse(fields[7]), Parse(fields[8]));
    }

    /// <summary>nvidia-smi's own "N/A"-style values, and anything else that is not a number, are unknown.</summary>
    public static double? Parse(string text) =>
        double.TryParse(text.Trim(), NumberStyles.Float, CultureInfo.InvariantCulture, out var value) && double.IsFinite(value) ? value : null;

    private static string Number(double? value) => value?.ToString("0.##", CultureInfo.InvariantCulture) ?? "";
}
