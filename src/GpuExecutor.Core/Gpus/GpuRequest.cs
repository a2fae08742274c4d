using System.Globalization;
using System.Text.RegularExpressions;
using GpuExecutor.Configuration;
using GpuExecutor.Outcomes;

namespace GpuExecutor.Gpus;

/// <summary>
/// What a job asks for, from its variables (untrusted: every value is checked, and a bad one is
/// the job's build failure). Unset variables fall back to the runner's config.
/// </summary>
public sealed partial record GpuRequest(int Count, long? MinimumMemoryMiB, string? Model)
{
    public const string CountVariable = "GPU_COUNT";
    public const string MinimumMemoryVariable = "GPU_MIN_MEMORY";
    public const string ModelVariable = "GPU_MODEL";

    [GeneratedRegex(@"^[0-9]{1,4}$")]
    private static partial Regex WholeNumber();

    [GeneratedRegex(@"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,63}$")]
    private static partial Regex ModelName();

    public static GpuRequest FromJob(IReadOnlyDictionary<string, string> variables, GpuSettings settings)
    {
        var count = settings.DefaultCount;
        if (variables.TryGetValue(CountVariable, out var countText))
        {
            if (!WholeNumber().IsMatch(countText))
                throw new BuildFailureException($"{CountVariable} '{Shorten(countText)}' is not a number of GPUs: use a whole number such as 1 or 8.");
            count = int.Parse(countText, CultureInfo.InvariantCulture);
        }
        if (settings.MaxCount is { } maximum && count > maximum)
            throw new BuildFailureException($"the job asks for {count} GPUs; this runner gives at most {maximum} per job (gpus.max_count). Pick a runner for bigger jobs with CI tags.");

        long? memory = null;
        if (variables.TryGetValue(MinimumMemoryVariable, out var memoryText))
        {
            if (!TryParseMemory(memoryText, out var mebibytes))
                throw new BuildFailureException($"{MinimumMemoryVariable} '{Shorten(memoryText)}' is not an amount of GPU memory: use a size such as 80G (as in H100 80GB), 80GiB, or 24576 (MiB).");
            memory = mebibytes;
        }

        string? model = null;
        if (variables.TryGetValue(ModelVariable, out var modelText))
        {
            if (!ModelName().IsMatch(modelText))
                throw new BuildFailureException($"{ModelVariable} '{Shorten(modelText)}' is not a GPU model: use part of the name nvidia-smi shows, such as A100 or H100 80GB.");
            model = modelText;
        }
        return new GpuRequest(count, memory, model);
    }

    /// <summary>Whether a GPU is the model asked for (a case-insensitive part of its name) with enough memory.</summary>
    public bool Admits(GpuDevice gpu) =>
        (Model is null || gpu.Name.Contains(Model, StringComparison.OrdinalIgnoreCase))
        && (MinimumMemoryMiB is null || gpu.MemoryTotalMiB >= MinimumMemoryMiB);

    public override string ToString()
    {
        var description = $"{Count} GPU{(Count == 1 ? "" : "s")}";
        if (Model is not null)
            description += $" of model '{Model}'";
        if (MinimumMemoryMiB is not null)
            description += $" with at least {MinimumMemoryMiB} MiB";
        return description;
    }

    // "Gi" too, as Kubernetes spells it.
    [GeneratedRegex(@"^([0-9]{1,9}(?:\.[0-9]{1,3})?) ?([kKmMgGtT](?:i?[bB]|i)?)?$")]
    private static partial Regex MemoryAmount();

    /// <summary>
    /// A unit without "i" counts in powers of ten, as GPU vendors do in model names, and one with
    /// "i" in powers of two: "80G" and "80GB" are 80·10⁹ bytes (76294 MiB), "80GiB" is 81920 MiB.
    /// A bare number is MiB, the unit nvidia-smi prints. Why: nvidia-smi reports 81559 MiB for an
    /// "H100 80GB" and 143771 MiB for an H200 "141GB" (recorded live, Fixtures/nvidia-smi), so a
    /// job asking for "80G" as binary gigabytes would be refused by the very GPU it means.
    /// </summary>
    private static bool TryParseMemory(string text, out long mebibytes)
    {
        mebibytes = 0;
        var match = MemoryAmount().Match(text.Trim());
        if (!match.Success)
            return false;
        var number = decimal.Parse(match.Groups[1].Value, NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture);
        var unit = match.Groups[2].Value;
        var binary = unit.Length == 0 || unit.Contains('i', StringComparison.OrdinalIgnoreCase);
        decimal bytesPerUnit = unit.Length == 0
            ? 1L << 20
            : char.ToUpperInvariant(unit[0]) switch
            {
                'K' => binary ? 1L << 10 : 1_000L,
                'M' => binary ? 1L << 20 : 1_000_000L,
                'G' => binary ? 1L << 30 : 1_000_000_000L,
                _ => binary ? 1L << 40 : 1_000_000_000_000L,
            };
        // Rounded up: a minimum must never admit a GPU with less than was asked for.
        var wanted = Math.Ceiling(number * bytesPerUnit / (1L << 20));
        if (wanted is < 1 or > 16L << 20)
            return false;
        mebibytes = (long)wanted;
        return true;
    }

    private static string Shorten(string value) => value.Length > 40 ? value[..40] + "…" : value;
}
