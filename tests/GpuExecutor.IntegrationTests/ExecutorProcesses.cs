using System.Globalization;

namespace GpuExecutor.IntegrationTests;

/// <summary>The executor's processes of one workspace, found in /proc by the binary and the workspace's config path.</summary>
internal static class ExecutorProcesses
{
    /// <summary>Each process's pid, its /proc directory, and its call: the words after `--config PATH` (the verb and its arguments).</summary>
    public static IEnumerable<(int Pid, string ProcDirectory, string[] Call)> Of(string configPath)
    {
        foreach (var directory in Directory.EnumerateDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(directory), out var pid))
                continue;
            string[] arguments;
            try
            {
                arguments = File.ReadAllText(Path.Combine(directory, "cmdline")).Split('\0', StringSplitOptions.RemoveEmptyEntries);
            }
            catch (Exception error) when (error is IOException or UnauthorizedAccessException)
            {
                // The process ended while it was read.
                continue;
            }
            var config = Array.IndexOf(arguments, configPath);
            if (config < 0 || arguments[0] != Testbed.Binary || config + 1 >= arguments.Length)
                continue;
            yield return (pid, directory, arguments[(config + 1)..]);
        }
    }
}

/// <summary>The executor's processes of one workspace, from /proc: each one's peak RSS (VmHWM), and the agents' together.</summary>
internal sealed class ProcessWatch(string configPath)
{
    private readonly Dictionary<int, (string Verb, long PeakKiB)> _seen = [];

    /// <summary>One line per process seen: its pid, verb and peak RSS.</summary>
    public IEnumerable<string> EveryProcess => _seen.OrderBy(pair => pair.Value.Verb, StringComparer.Ordinal).ThenBy(pair => pair.Key).Select(pair => $"  {pair.Key} {pair.Value.Verb}: {pair.Value.PeakKiB} KiB");

    public Dictionary<string, long> PeakByVerb => _seen.Values.GroupBy(process => process.Verb).ToDictionary(group => group.Key, group => group.Max(process => process.PeakKiB));
    public int AgentsSeen => _seen.Values.Count(process => process.Verb == "checkpoints agent");
    public int MostAgentsAtOnce { get; private set; }
    public long MostAgentsRssKiB { get; private set; }

    public void Sample()
    {
        var agents = 0;
        var agentsRss = 0L;
        foreach (var (pid, directory, call) in ExecutorProcesses.Of(configPath))
        {
            // Detached verbs have two words: "checkpoints agent", "gpus sample", "datasets stream".
            var verb = call[0] is "checkpoints" or "gpus" or "datasets" && call.Length > 1 ? call[0] + " " + call[1] : call[0];
            try
            {
                var status = File.ReadAllLines(Path.Combine(directory, "status"));
                long Field(string name) => status.Where(line => line.StartsWith(name, StringComparison.Ordinal)).Select(line => long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture)).FirstOrDefault();
                var (peak, rss) = (Field("VmHWM:"), Field("VmRSS:"));
                _seen[pid] = (verb, Math.Max(peak, _seen.TryGetValue(pid, out var before) ? before.PeakKiB : 0));
                if (verb == "checkpoints agent")
                    (agents, agentsRss) = (agents + 1, agentsRss + rss);
            }
            catch (Exception error) when (error is IOException or UnauthorizedAccessException)
            {
                // The process ended while it was read.
            }
        }
        MostAgentsAtOnce = Math.Max(MostAgentsAtOnce, agents);
        MostAgentsRssKiB = Math.Max(MostAgentsRssKiB, agentsRss);
    }
}
