using System.Globalization;
using GpuExecutor.Outcomes;

namespace GpuExecutor.AdminLog;

/// <summary>What `events` shows: one job's lines, the lines since a time, or all.</summary>
public sealed record EventFilter(long? Job, DateTimeOffset? Since)
{
    public bool Matches(AdminEvent record) =>
        (Job is null || record.Job == Job) && (Since is null || record.Time >= Since);

    /// <summary>"90s", "30m", "1h", "2d" back from now, or an ISO 8601 time ("2026-12-01T06:00:00Z").</summary>
    public static DateTimeOffset ParseSince(string text, DateTimeOffset now)
    {
        if (text.Length >= 2 && char.ToLowerInvariant(text[^1]) is 's' or 'm' or 'h' or 'd'
            && double.TryParse(text[..^1], NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out var amount) && amount >= 0)
        {
            var span = char.ToLowerInvariant(text[^1]) switch
            {
                's' => TimeSpan.FromSeconds(amount),
                'm' => TimeSpan.FromMinutes(amount),
                'h' => TimeSpan.FromHours(amount),
                _ => TimeSpan.FromDays(amount),
            };
            return now - span;
        }
        if (DateTimeOffset.TryParse(text, CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal, out var time))
            return time;
        throw new SystemFailureException($"--since '{text}': use a span back from now (90s, 30m, 1h, 2d) or a time (2026-12-01T06:00:00Z).");
    }

    /// <summary>One event as a line for a terminal: time, verb, job, outcome, duration, then what it carries.</summary>
    public static string Format(AdminEvent record)
    {
        var parts = new List<string>
        {
            record.Time.UtcDateTime.ToString("yyyy-MM-dd HH:mm:ss", CultureInfo.InvariantCulture),
            record.Verb + (record.Stage is null ? "" : " " + record.Stage),
            record.Job is { } job ? $"job {job}" : "-",
            record.Outcome,
            $"{record.DurationMs} ms",
        };
        if (record.RunKey is { } run)
            parts.Add($"run {run}");
        if (record.Gpus is { Count: > 0 } gpus)
            parts.Add($"gpus {string.Join(',', gpus)}");
        if (record.Datasets is { } datasets)
            parts.Add($"datasets {datasets.Objects} objects, {datasets.BytesFetched / 1048576.0:0.0} MiB fetched, {datasets.CacheHits} cached{(datasets.Streaming ? ", streaming" : "")}");
        if (record.Checkpoint is { RestoredGeneration: { } generation })
            parts.Add($"restored generation {generation}");
        if (record.Checkpoint is { AdoptedJob: { } adopted })
            parts.Add($"adopted job {adopted}");
        if (record.ScriptExitCode is { } scriptExit)
            parts.Add($"script exit {scriptExit}");
        if (record.Message is { } message)
            parts.Add(message.ReplaceLineEndings(" "));
        return string.Join("  ", parts);
    }
}
