using System.Globalization;

namespace GpuExecutor.Gpus;

/// <summary>
/// `nvidia-smi --query-gpu=… --format=csv,noheader,nounits`: one line per GPU, fields separated
/// by ", ". Fields a GPU cannot report read "[N/A]" (or "[Not Supported]") even with nounits:
/// memory.used and utilization.gpu of a MIG-enabled GPU, mig.mode.current of a GPU without MIG.
/// </summary>
public static class NvidiaSmiQuery
{
    public static readonly IReadOnlyList<string> Arguments =
    [
        "--query-gpu=index,uuid,name,memory.total,memory.used,utilization.gpu,mig.mode.current",
        "--format=csv,noheader,nounits",
    ];

    /// <summary>
    /// What prepare asks inside a job container to check that it sees exactly its own GPUs. A
    /// shell line, as it runs through the job's shell; it carries nothing from the job.
    /// </summary>
    public const string VisibleUuidsCommand = "nvidia-smi --query-gpu=uuid --format=csv,noheader";

    /// <summary>The UUIDs <see cref="VisibleUuidsCommand"/> printed, sorted, for comparing as sets.</summary>
    public static IReadOnlyList<string> ParseVisibleUuids(string output) =>
        output.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Order(StringComparer.Ordinal).ToList();

    /// <summary>Parses the query's output; drivers too old for mig.mode.current give six fields, which is accepted.</summary>
    public static IReadOnlyList<GpuDevice> Parse(string output)
    {
        var devices = new List<GpuDevice>();
        var lineNumber = 0;
        foreach (var rawLine in output.Split('\n'))
        {
            lineNumber++;
            var line = rawLine.Trim();
            if (line.Length == 0)
                continue;
            // GPU names contain no commas; split on "," and trim, as nvidia-smi pads with a space.
            var fields = line.Split(',').Select(field => field.Trim()).ToArray();
            if (fields.Length is not (6 or 7))
                throw new FormatException($"nvidia-smi line {lineNumber} has {fields.Length} fields, expected 7: '{line}'");
            if (!int.TryParse(fields[0], NumberStyles.None, CultureInfo.InvariantCulture, out var index))
                throw new FormatException($"nvidia-smi line {lineNumber}: index '{fields[0]}' is not a number");
            if (!fields[1].StartsWith("GPU-", StringComparison.Ordinal) && !fields[1].StartsWith("MIG-", StringComparison.Ordinal))
                throw new FormatException($"nvidia-smi line {lineNumber}: '{fields[1]}' is not a GPU UUID");

            devices.Add(new GpuDevice(
                index,
                fields[1],
                fields[2],
                Number(fields[3]),
                Number(fields[4]),
                (int?)Number(fields[5]),
                fields.Length == 7 && fields[6].Equals("Enabled", StringComparison.OrdinalIgnoreCase)));
        }
        return devices;
    }

    private static long? Number(string field) =>
        long.TryParse(field, NumberStyles.Integer, CultureInfo.InvariantCulture, out var value) ? value : null;
}
