using System.Globalization;
using GpuExecutor.Checkpoints;
using GpuExecutor.HostFiles;

namespace GpuExecutor.Continuation;

/// <summary>The host files that carry continuation between prepare, run and the agent, in the run's directory.</summary>
public static class ContinuationFiles
{
    public static string SegmentFile(RunDirectories directories, long jobId) =>
        Path.Combine(directories.Root, $"segment-{jobId.ToString(CultureInfo.InvariantCulture)}.json");

    public static string RequestFile(RunDirectories directories, long jobId) =>
        Path.Combine(directories.Root, $"continue-{jobId.ToString(CultureInfo.InvariantCulture)}.json");

    public static void WriteSegment(RunDirectories directories, long jobId, JobSegment segment) =>
        StateFiles.Write(SegmentFile(directories, jobId), segment, ContinuationJsonContext.Default.JobSegment);

    public static JobSegment? ReadSegment(RunDirectories directories, long jobId) =>
        StateFiles.Read(SegmentFile(directories, jobId), ContinuationJsonContext.Default.JobSegment);

    public static void WriteRequest(RunDirectories directories, ContinuationRequest request) =>
        StateFiles.Write(RequestFile(directories, request.JobId), request, ContinuationJsonContext.Default.ContinuationRequest);

    public static ContinuationRequest? ReadRequest(RunDirectories directories, long jobId) =>
        StateFiles.Read(RequestFile(directories, jobId), ContinuationJsonContext.Default.ContinuationRequest);
}
