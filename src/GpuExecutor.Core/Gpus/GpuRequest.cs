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
                throw new BuildFailureException($"{MinimumMemoryVariable} '{Shorten(memoryText)}' is not an amount of GPU memory: use a size such as 40G, 24576M or 80GiB.");
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

    /// <summary>"40G", "40GiB", "40GB" and "40960M" are all 40960 MiB; a bare number is MiB.</summary>
    private static bool TryParseMemory(string text, out long mebibytes)
    {
        mebibytes = 0;
        var trimmed = text.Trim();
        if (trimmed.Length is 0 or > 16)
            return false;
        if (trimmed.EndsWith("iB", StringComparison.OrdinalIgnoreCase))
            trimmed = trimmed[..^2];
        else if (trimmed.EndsWith('B') || trimmed.EndsWith('b'))
            trimmed = trimmed[..^1];
        if (WholeNumber().IsMatch(trimmed) || (trimmed.Length > 0 && long.TryParse(trimmed, NumberStyles.None, CultureInfo.InvariantCulture, out _)))
            trimmed += "m";
        if (!ByteSize.TryParse(trimmed, out var bytes) || bytes < 1L << 20)
            return false;
        mebibytes = bytes >> 20;
        return mebibytes is > 0 and <= 16L << 20;
    }

    private static string Shorten(string value) => value.Length > 40 ? value[..40] + "…" : value;
}
