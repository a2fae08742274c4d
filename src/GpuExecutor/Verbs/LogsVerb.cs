using System.Globalization;
using System.IO.Compression;
using GpuExecutor.Checkpoints;
using GpuExecutor.JobLog;
using GpuExecutor.Outcomes;

namespace GpuExecutor.Verbs;

/// <summary>`logs JOB|RUN [--follow]`: a job's whole step logs from this host, or a run's from the store.</summary>
public static class LogsVerb
{
    public static async Task RunAsync(VerbContext context, string target, bool follow, TextWriter stderr)
    {
        var config = context.Config;
        // Raw bytes: the log is what the steps printed, not text to re-encode.
        await using var stdout = Console.OpenStandardOutput();
        if (long.TryParse(target, NumberStyles.None, CultureInfo.InvariantCulture, out var jobId))
        {
            context.Facts.JobId = jobId;
            if (await StepLogReader.CopyAsync(config.StateDir, jobId, stdout, follow, context.Stop) == 0)
                throw new SystemFailureException($"no log of job {jobId} on this host ({StepLogFiles.DirectoryOf(config.StateDir, jobId)}); a checkpointed job's log is in the store: gpu-executor logs RUN");
            return;
        }
        if (!CheckpointRequest.IsRunKey(target))
            throw new SystemFailureException($"'{target}' is neither a job id nor a run key.");
        if (follow)
            throw new SystemFailureException("--follow reads a log while it is written, on the job's host: give the job id.");
        context.Facts.RunKey = target;
        var (store, repository) = CheckpointStores.Open(context.Adapters.Stores, config, target, line => stderr.WriteLine(line));
        using (store)
        {
            var logs = (await repository.ListRunRecordsAsync("logs/", context.Stop)).Order(StringComparer.Ordinal).ToList();
            if (logs.Count == 0)
                throw new SystemFailureException($"run '{target}' has no logs in the store.");
            foreach (var name in logs)
            {
                // Which job's log is which, where a person sees it and a pipe does not.
                if (logs.Count > 1)
                    await stderr.WriteLineAsync($"==> runs/{target}/{name} <==");
                await using var stored = await repository.OpenRunFileAsync(name, context.Stop)
                    ?? throw new SystemFailureException($"runs/{target}/{name} went away while it was read.");
                await using var gzip = new GZipStream(stored, CompressionMode.Decompress);
                await gzip.CopyToAsync(stdout, context.Stop);
                await stdout.FlushAsync(context.Stop);
            }
        }
    }
}
