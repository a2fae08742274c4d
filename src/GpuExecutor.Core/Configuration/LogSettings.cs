using System.Text.RegularExpressions;

namespace GpuExecutor.Configuration;

/// <summary>
/// [logs]: the whole output of a job's own steps, kept past the runner's output_limit, and how
/// much of it the job log shows.
/// </summary>
public sealed record LogSettings
{
    /// <summary>
    /// Bytes of the job's step output the job log gets in all, below the runner's output_limit
    /// (4 MiB by default): three quarters live, the rest for the throttled view that follows.
    /// </summary>
    public long JobLogBudgetBytes { get; init; } = 3L << 20;

    /// <summary>Past the live part, one line in this many reaches the job log (besides the matching ones).</summary>
    public int SampleOneIn { get; init; } = 100;

    /// <summary>
    /// Past the live part, every line that matches one of these reaches the job log, as long as
    /// the budget lasts. Kept as text: a NonBacktracking regex costs milliseconds to build, and
    /// only a user step's `run` needs them (JobLog.StepOutputLog compiles them as one); every
    /// other verb would pay for them at each config load.
    /// </summary>
    public IReadOnlyList<string> KeepPatterns { get; init; } = DefaultKeepPatterns;

    /// <summary>How often the throttled view says how much it held back and where the whole log is.</summary>
    public TimeSpan HeldBackNoticeInterval { get; init; } = TimeSpan.FromMinutes(5);

    /// <summary>How long `gc` keeps a job's whole logs on the host (the store keeps a checkpointed run's).</summary>
    public TimeSpan HostKeep { get; init; } = TimeSpan.FromDays(7);

    public static readonly IReadOnlyList<string> DefaultKeepPatterns = ["error", "exception", "traceback", "warning", "nan", "loss", "epoch"];

    /// <summary>
    /// Case-insensitive, and without backtracking: a pattern runs on every line of a training's
    /// output, so its cost must stay linear in the line whatever the pattern.
    /// </summary>
    public static Regex Compile(string pattern) => new(pattern, RegexOptions.IgnoreCase | RegexOptions.CultureInvariant | RegexOptions.NonBacktracking);
}
