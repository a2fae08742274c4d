using System.Text.Json;
using GpuExecutor.AdminLog;

namespace GpuExecutor.Verbs;

/// <summary>`events [--job N] [--since 1h] [--follow] [--json]`: the admin log, read back.</summary>
public static class EventsVerb
{
    public static async Task RunAsync(VerbContext context, long? job, string? since, bool follow, bool json, TextWriter stdout)
    {
        var filter = new EventFilter(job, since is null ? null : EventFilter.ParseSince(since, DateTimeOffset.UtcNow));
        void Write(AdminEvent record) =>
            stdout.WriteLine(json ? JsonSerializer.Serialize(record, AdminLogJsonContext.Default.AdminEvent) : EventFilter.Format(record));

        foreach (var record in EventLog.ReadAll(context.Config.StateDir).Where(filter.Matches))
            Write(record);
        if (!follow)
            return;
        stdout.Flush();
        // Until Ctrl-C (or SIGTERM): an admin watching, not a detached process.
        await foreach (var record in EventLog.FollowAsync(context.Config.StateDir, TimeSpan.FromMilliseconds(500), context.Stop))
        {
            if (filter.Matches(record))
            {
                Write(record);
                stdout.Flush();
            }
        }
    }
}
