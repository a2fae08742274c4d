using System.Globalization;
using System.Text;

namespace GpuExecutor.Telemetry;

/// <summary>
/// Where a job's GPU samples live on the host: state_dir/telemetry/job-ID/, written by the job's
/// sampler, read by `run` at the end of each user step. Keyed by the job whose container holds
/// the GPUs, so that a job that adopts a training reads that training's samples.
/// </summary>
public static class GpuTelemetryFiles
{
    /// <summary>Where `run` copies the samples in the job's project directory, for `artifacts: paths:`.</summary>
    public const string ProjectFile = ".gpu-executor/gpu-usage.csv";

    public static string DirectoryOf(string stateDir, long jobId) =>
        Path.Combine(stateDir, "telemetry", "job-" + jobId.ToString(CultureInfo.InvariantCulture));

    public static string SamplesFile(string stateDir, long jobId) => Path.Combine(DirectoryOf(stateDir, jobId), "gpu.csv");

    /// <summary>Held by the job's one sampler for its whole life: a second one started for the job finds it taken and leaves.</summary>
    public static string SamplerLock(string stateDir, long jobId) => Path.Combine(DirectoryOf(stateDir, jobId), "sampler.lock");

    public static string SamplerLog(string stateDir, long jobId) => Path.Combine(DirectoryOf(stateDir, jobId), "sampler.log");

    /// <summary>Every sample recorded so far, in order; torn or foreign lines are skipped.</summary>
    public static IReadOnlyList<GpuSample> ReadSamples(string path) => Read(path).Samples;

    /// <summary>
    /// The samples file as it is now, while its sampler may still append: its bytes (for the
    /// store) and the samples they hold, from one read. Empty when there is no file.
    /// </summary>
    public static (byte[] Csv, IReadOnlyList<GpuSample> Samples) Read(string path)
    {
        if (!File.Exists(path))
            return ([], []);
        byte[] csv;
        using (var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete))
        using (var copy = new MemoryStream())
        {
            stream.CopyTo(copy);
            csv = copy.ToArray();
        }
        var samples = new List<GpuSample>();
        foreach (var line in System.Text.Encoding.UTF8.GetString(csv).Split('\n'))
        {
            if (GpuSample.FromCsv(line) is { } sample)
                samples.Add(sample);
        }
        return (csv, samples);
    }

    /// <summary>How much of the end of a samples file is read for its GPUs' newest samples.</summary>
    private const int NewestTailBytes = 16 * 1024;

    /// <summary>Each GPU's newest sample in the end of a samples file, which its sampler may be appending to.</summary>
    public static IEnumerable<GpuSample> ReadNewest(string path)
    {
        try
        {
            using var file = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
            var start = Math.Max(0, file.Length - NewestTailBytes);
            file.Seek(start, SeekOrigin.Begin);
            var buffer = new byte[file.Length - start];
            file.ReadExactly(buffer);
            var text = Encoding.UTF8.GetString(buffer);
            // The first line of a tail may be cut, and the last may be torn: only whole samples count.
            var newest = new Dictionary<string, GpuSample>(StringComparer.Ordinal);
            foreach (var line in text.Split('\n').Skip(start > 0 ? 1 : 0))
            {
                if (GpuSample.FromCsv(line) is { } sample)
                    newest[sample.Uuid] = sample;
            }
            return newest.Values;
        }
        catch (Exception error) when (error is IOException or UnauthorizedAccessException)
        {
            return [];
        }
    }
}

/// <summary>Starts a job's GPU sampler (`gpus sample JOB`), which lives as long as the job's container.</summary>
public interface IGpuSamplerLauncher
{
    /// <summary>Starts it detached; returns its log's path.</summary>
    string Start(long jobId);
}
