using System.Globalization;

namespace GpuExecutor.Clocks;

/// <summary>An instant on one boot's clock: seconds since that boot.</summary>
public readonly record struct BootInstant(string BootId, double SecondsSinceBoot)
{
    /// <summary>A century: any uptime past it is a corrupt label, and would overflow a TimeSpan in arithmetic.</summary>
    private const double LongestUptimeSeconds = 100 * 365.25 * 86_400;

    /// <summary>The label form: "BOOT-ID@SECONDS".</summary>
    public override string ToString() =>
        string.Create(CultureInfo.InvariantCulture, $"{BootId}@{SecondsSinceBoot:0.000}");

    public static BootInstant? Parse(string? text)
    {
        if (text is null || text.Split('@') is not [var bootId, var seconds] || bootId.Length is 0 or > 64
            || !double.TryParse(seconds, NumberStyles.Float, CultureInfo.InvariantCulture, out var value) || value is not (>= 0 and <= LongestUptimeSeconds))
            return null;
        return new BootInstant(bootId, value);
    }
}

/// <summary>
/// The host's clock since boot (/proc/uptime, which counts suspend too), shared by every process
/// of the host and moved by no change of the wall clock. A job's deadline is kept on it as well
/// as in wall-clock time, so that `run`, the agent, the dataset fetcher and `gc`, each a separate
/// process, agree on it even when the wall clock jumps between them. After a reboot (another
/// boot id) only the wall-clock time is left, which is all a lost host's deadlines need.
/// </summary>
public static class BootClock
{
    private const string BootIdFile = "/proc/sys/kernel/random/boot_id";
    private const string UptimeFile = "/proc/uptime";

    private static readonly Lazy<string?> ThisBoot = new(() => ReadFirstWord(BootIdFile));

    /// <summary>Now, on this boot's clock; null where /proc does not say (not Linux).</summary>
    public static BootInstant? Now()
    {
        if (ThisBoot.Value is not { } bootId
            || !double.TryParse(ReadFirstWord(UptimeFile), NumberStyles.Float, CultureInfo.InvariantCulture, out var seconds))
            return null;
        return new BootInstant(bootId, seconds);
    }

    /// <summary>Where <paramref name="instant"/> lies in the wall clock's present terms; null when it belongs to another boot.</summary>
    public static DateTimeOffset? AsWallTime(BootInstant instant)
    {
        var wallNow = DateTimeOffset.UtcNow;
        if (Now() is not { } now || now.BootId != instant.BootId)
            return null;
        return wallNow + TimeSpan.FromSeconds(instant.SecondsSinceBoot - now.SecondsSinceBoot);
    }

    private static string? ReadFirstWord(string path)
    {
        try
        {
            return File.ReadAllText(path).Split((char[]?)null, 2, StringSplitOptions.RemoveEmptyEntries).FirstOrDefault();
        }
        catch (Exception error) when (error is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }
}

/// <summary>
/// A deadline several processes of one host share (a job's, from its container's labels): its
/// wall-clock time, and the same instant on the host's boot clock where known. <see cref="Current"/>
/// is the deadline in the wall clock's present terms: after the wall clock jumps, it moves with
/// it, so "how long until the deadline" stays what it was.
/// </summary>
public sealed record HostDeadline(DateTimeOffset WallTime, BootInstant? OnBootClock)
{
    /// <summary>Made now, <paramref name="fromNow"/> ahead: the same instant on both clocks.</summary>
    public static HostDeadline In(TimeSpan fromNow)
    {
        var boot = BootClock.Now();
        return new HostDeadline(DateTimeOffset.UtcNow + fromNow, boot is { } now ? now with { SecondsSinceBoot = now.SecondsSinceBoot + fromNow.TotalSeconds } : null);
    }

    public DateTimeOffset Current => OnBootClock is { } instant && BootClock.AsWallTime(instant) is { } wall ? wall : WallTime;

    public TimeSpan Left => Current - DateTimeOffset.UtcNow;
}
