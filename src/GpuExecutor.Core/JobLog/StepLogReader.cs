using System.IO.Compression;
using GpuExecutor.HostFiles;
using GpuExecutor.Clocks;

namespace GpuExecutor.JobLog;

/// <summary>A job's whole step logs from the host, as the steps printed them, for `gpu-executor logs JOB`.</summary>
public static class StepLogReader
{
    /// <summary>How long --follow waits, after a step's end, for the job's next step to begin.</summary>
    public static readonly TimeSpan NextStepWait = TimeSpan.FromSeconds(5);

    private static readonly TimeSpan FollowPoll = TimeSpan.FromMilliseconds(200);

    /// <summary>
    /// Copies every step's log of the job to <paramref name="output"/>, in the order the steps ran.
    /// With <paramref name="follow"/>, a step still being written is followed until its writer
    /// ends (its lock is free: a writer that died ends the follow too), and then the next step.
    /// Returns how many step logs there were.
    /// </summary>
    public static async Task<int> CopyAsync(string stateDir, long jobId, Stream output, bool follow, CancellationToken cancellationToken)
    {
        var directory = StepLogFiles.DirectoryOf(stateDir, jobId);
        var done = new HashSet<string>(StringComparer.Ordinal);
        string? NextStep() => StepLogFiles.Steps(directory).FirstOrDefault(path => !done.Contains(StepLogFiles.StepOf(path)));
        while (true)
        {
            var next = NextStep();
            if (next is null && follow && done.Count > 0)
            {
                // Between two steps: the next one may be about to begin.
                var giveUp = Monotonic.Now + NextStepWait;
                while (next is null && Monotonic.Now < giveUp)
                {
                    await Task.Delay(FollowPoll, cancellationToken);
                    next = NextStep();
                }
            }
            if (next is null)
                return done.Count;
            done.Add(StepLogFiles.StepOf(next));
            if (next.EndsWith(StepLogFiles.CompressedSuffix, StringComparison.Ordinal))
                await CopyCompressedAsync(next, output, cancellationToken);
            else
                await CopyLiveAsync(next, output, follow, cancellationToken);
        }
    }

    public static async Task CopyCompressedAsync(string path, Stream output, CancellationToken cancellationToken)
    {
        await using var file = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, bufferSize: 1 << 16);
        await using var gzip = new GZipStream(file, CompressionMode.Decompress);
        await gzip.CopyToAsync(output, cancellationToken);
    }

    /// <summary>
    /// A step's live file: what is there, and with follow what comes until its writer ends. The
    /// writer compresses it and deletes it when the step ends; the open handle reads on to its
    /// end all the same.
    /// </summary>
    private static async Task CopyLiveAsync(string path, Stream output, bool follow, CancellationToken cancellationToken)
    {
        FileStream file;
        try
        {
            file = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete, bufferSize: 1 << 16);
        }
        catch (FileNotFoundException)
        {
            // The step ended between the listing and the open: its compressed log is whole.
            await CopyCompressedAsync(StepLogFiles.CompressedOf(path), output, cancellationToken);
            return;
        }
        await using (file)
        {
            var buffer = new byte[1 << 16];
            while (true)
            {
                var read = await file.ReadAsync(buffer, cancellationToken);
                if (read > 0)
                {
                    await output.WriteAsync(buffer.AsMemory(0, read), cancellationToken);
                    continue;
                }
                if (!follow)
                    return;
                var writerLock = StepLogFiles.WriterLock(path);
                using (var free = File.Exists(writerLock) ? HostLock.TryAcquire(writerLock) : null)
                {
                    // A free (or missing) lock: the writer has ended. One more read takes what it wrote last.
                    if (free is not null || !File.Exists(writerLock))
                    {
                        await file.CopyToAsync(output, cancellationToken);
                        return;
                    }
                }
                await output.FlushAsync(cancellationToken);
                await Task.Delay(FollowPoll, cancellationToken);
            }
        }
    }
}
